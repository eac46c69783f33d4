"""Book conventions (ocr_assets.models.conventions): honorific ligatures learned from a book's lines, folded into
the training targets and written back as the book's own expansion on output."""

import json
import re

import pytest

from ocr_assets.errors import ModelError
from ocr_assets.models.conventions import (FILE, Conventions, learn, lines_to_read, occurrences,
                                           with_conventions)

SAW = "\ufdfa"  # ﷺ
SAW_LONG = "صلى الله عليه وآله وسلم"
RADI = "\ufd41"  # رضي الله عنه


def test_occurrences_find_each_surface_form_once_longest_first():
    texts = ["قال رسول الله صلى الله عليه وسلم ذلك", "عن ابن عمر رضي الله عنهما قال", "قال صلعم",
             "عن أبي هريرة رضي الله عنه", "رسول الله صلي الله عليه و سلم", "لا شيء هنا"]
    found = occurrences(texts)
    assert [form for _, form in found[SAW]] == ["صلى الله عليه وسلم", "صلعم", "صلي الله عليه و سلم"]
    assert [i for i, _ in found[SAW]] == [0, 2, 4]
    # «رضي الله عنهما» is the dual ligature, never also counted as «رضي الله عنه» (the shorter phrase).
    assert [i for i, _ in found["\ufd44"]] == [1] and [i for i, _ in found[RADI]] == [3]
    assert lines_to_read(texts, habits=False) == [0, 1, 2, 3, 4]
    assert lines_to_read(texts) == [0, 1, 2, 3, 4, 5]  # with habits: enough lines to judge the marks


def test_learn_takes_a_glyph_where_the_base_reading_misses_the_letters():
    texts = [f"قال رسول الله {SAW_LONG} ذلك", f"وقال {SAW_LONG}", "عن أبي هريرة رضي الله عنه قال",
             "وعن عمر رضي الله عنه"]
    # The base model read the first two as «صلم» (a glyph it cannot spell), the others letter for letter.
    readings = {0: "قال رسول الله صلم ذلك", 1: "وقال صلم", 2: texts[2], 3: texts[3]}
    conv = learn(texts, readings)
    assert conv.expansions == {SAW: SAW_LONG}  # رضي الله عنه is printed in letters here: nothing to learn
    assert conv.evidence[SAW] == {"glyph": 2} and conv.evidence[RADI] == {"letters": 2}
    assert conv.forms[SAW] == {SAW_LONG: 2}
    # Ground truth alone (no readings) trusts that every spelled-out honorific stands for a glyph.
    assert set(learn(texts).expansions) == {SAW, RADI}


def test_the_most_common_form_is_the_expansion_and_fold_takes_every_form():
    texts = [f"قال {SAW_LONG}", f"قال {SAW_LONG}", "قال صلى الله عليه وسلم"]
    conv = learn(texts, {0: "قال", 1: "قال", 2: "قال"})
    assert conv.expansions[SAW] == SAW_LONG and conv.forms[SAW] == {SAW_LONG: 2, "صلى الله عليه وسلم": 1}
    assert conv.fold("قال صلى الله عليه وسلم وقال صلعم") == f"قال {SAW} وقال {SAW}"
    # Only learned ligatures are folded; a word that merely starts like one is left alone.
    assert conv.fold("رضي الله عنه") == "رضي الله عنه"
    assert Conventions({RADI: "رضي الله عنه"}).fold("رضي الله عنهما") == "رضي الله عنهما"


def test_apply_writes_the_expansion_and_spreads_confidences_and_positions():
    conv = Conventions({SAW: "صلعم"})
    text, confs, poss = conv.apply(f"قال {SAW}", [0.9, 0.8, 0.7, 0.6, 0.5], [1.0, 2.0, 3.0, 4.0, 5.0])
    assert text == "قال صلعم"
    assert confs == [0.9, 0.8, 0.7, 0.6, 0.5, 0.5, 0.5, 0.5] and poss == [1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0]
    kept = Conventions({SAW: "صلعم"}, keep_ligatures=True).apply(f"قال {SAW}", [0.9] * 5)
    assert kept[0] == f"قال {SAW}" and kept[1] == [0.9] * 5


def test_save_load_merge_and_a_corrupt_file(tmp_path):
    assert Conventions().save(tmp_path) is None and not (tmp_path / FILE).exists()  # nothing learned: no file
    Conventions({SAW: SAW_LONG}, {SAW: {SAW_LONG: 3}}, {SAW: {"glyph": 3}}).save(tmp_path)
    data = json.loads((tmp_path / FILE).read_text(encoding="utf-8"))
    assert data["expansions"] == {SAW: SAW_LONG} and data["names"][SAW] == "sallallahu alayhi wa-sallam"
    loaded = Conventions.load(tmp_path)
    assert loaded.expansions == {SAW: SAW_LONG} and not loaded.keep_ligatures
    assert Conventions.load(tmp_path, keep_ligatures=True).keep_ligatures
    newer = loaded.merged_with(Conventions({SAW: "صلعم", RADI: "رضي الله عنه"}))
    assert newer.expansions == {SAW: "صلعم", RADI: "رضي الله عنه"}  # the newer fine-tune wins
    (tmp_path / FILE).write_text('{"expansions": ', encoding="utf-8")  # cut short
    with pytest.raises(ModelError, match="not a valid conventions file"):
        Conventions.load(tmp_path)


def test_a_real_recognizer_wrapped_with_conventions_writes_the_expansion(tmp_path):
    """The shipped model reads a line; a convention for a character it emits is applied to its real output."""
    from ocr_assets.models.resolve import load_recognizer
    from ocr_assets_tests.test_images import render_line

    plain = load_recognizer(None, device="cpu")
    line = render_line("قال أبو عثمان")
    read = plain.recognize([line])[0]
    assert read.text.replace(" ", "") == "قالأبوعثمان"
    # A model directory whose conventions expand «ع» (a stand-in ligature the shipped model does emit).
    model = plain.save(tmp_path / "m")
    (model / FILE).write_text(json.dumps({"expansions": {"ع": "<ayn>"}}), encoding="utf-8")
    booked = load_recognizer(model, device="cpu")
    out = booked.recognize([line])[0]
    assert out.text == read.text.replace("ع", "<ayn>")
    assert len(out.char_confidences) == len(out.text)
    assert load_recognizer(model, device="cpu", keep_ligatures=True).recognize([line])[0].text == read.text
    # Saving the wrapped recognizer keeps the conventions with the weights.
    again = booked.save(tmp_path / "again")
    assert Conventions.load(again).expansions == {"ع": "<ayn>"}
    assert with_conventions(plain, Conventions()) is plain


def test_learn_the_digit_system_and_the_marks_a_book_writes():
    truths = [f"قال أبو محمد الكتاني({i}) : تكلموا فيه {i}{i+1}" for i in range(1, 9)] * 4
    reads = {i: t.replace("تكلموا", "تَكَلَّمُوا").translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
             for i, t in enumerate(truths)}
    conv = learn(truths, reads)
    assert conv.digits == "latin" and conv.drop_marks
    assert conv.evidence["digits"]["truth_latin"] > 0 and conv.evidence["digits"]["truth_arabic"] == 0
    # Targets follow the print's digits (what the base model reads); output follows the book.
    assert conv.fold("سنة 241") == "سنة ٢٤١"
    text, confs, poss = conv.apply("تَكَ ٥٨", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], [1, 2, 3, 4, 5, 6, 7])
    assert text == "تك 58" and confs == [0.1, 0.3, 0.5, 0.6, 0.7] and poss == [1, 3, 5, 6, 7]
    # A book that writes what the model reads learns nothing; too few digits or letters decide nothing.
    same = learn(truths, {i: t for i, t in enumerate(truths)})
    assert same.digits is None and not same.drop_marks and not same
    assert learn(truths[:1], {0: reads[0]}).digits is None
    # The reverse habit: the book writes Arabic-Indic digits where the model reads Latin ones.
    arabic = [t.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")) for t in truths]
    assert learn(arabic, {i: t for i, t in enumerate(truths)}).digits == "arabic"


def test_habits_survive_save_and_load_and_a_bad_digits_value_is_refused(tmp_path):
    Conventions(digits="latin", drop_marks=True).save(tmp_path)
    loaded = Conventions.load(tmp_path)
    assert loaded.digits == "latin" and loaded.drop_marks and loaded.apply("٥٨")[0] == "58"
    (tmp_path / FILE).write_text(json.dumps({"digits": "roman"}), encoding="utf-8")
    with pytest.raises(ModelError, match="roman"):
        Conventions.load(tmp_path)


def test_the_shipped_model_learns_a_books_digits_and_marks_from_its_lines_without_training():
    """Rendered vocalised lines with Arabic-Indic digits, transcribed as the shared books do (Latin digits, no
    marks): the base model's own readings tell the habits, and its wrapped output then follows the book."""
    from ocr_assets.metrics import cer
    from ocr_assets.models.resolve import load_recognizer
    from ocr_assets.text import strip_tashkeel
    from ocr_assets_tests.test_images import render_line

    printed = ["قال أبو عثمان في كتاب الحيوان (١)", "حدثنا محمد بن عبد الله سنة ٣٠٥", "فَهَذَا بَابٌ مِنَ العِلْمِ كما قال ١٩٨",
               "قال أبو عثمان في كتاب الحيوان (٢)", "حدثنا محمد بن عبد الله سنة ٤٧٠", "فَهَذَا بَابٌ مِنَ العِلْمِ (٣)"]
    truths = [strip_tashkeel(t).translate(str.maketrans("٠١٢٣٤٥٦٧٨٩", "0123456789")) for t in printed]
    base = load_recognizer(None, device="cpu")
    images = [render_line(t, size=32) for t in printed]
    reads = [r.text for r in base.recognize(images)]
    conv = learn(truths * 10, {i: reads[i % 6] for i in range(60)})
    assert conv.digits == "latin" and conv.drop_marks, conv.evidence
    booked = with_conventions(base, conv)
    after = [r.text for r in booked.recognize(images)]
    # Measured (2026-12-03): CER against the transcription 0.176 before (marks and digits), 0.017 after (one
    # letter the model misses); bounds ~2x.
    assert cer(truths, reads) > 0.1 and cer(truths, after) < 0.035, (reads, after)
    assert all(ch not in "".join(after) for ch in "٠١٢٣٤٥٦٧٨٩\u064e\u064f\u0650")


def test_word_rules_are_learned_where_the_book_is_consistent_and_rewrite_whole_words(tmp_path):
    """A print that sets word-final «ي» dotless: the model reads «فى» and «الذى» where the book writes «في» and
    «الذي». A word read the same wrong way at least twice, in at least WORD_SHARE of its readings, gets a rule; a
    word read wrong once, or wrong in only some of its readings, or right, gets none."""
    from ocr_assets.models.conventions import learn_words, rejudge

    truths = [f"قال {w} في الدار الذي رآه على الباب" for w in ("زيد", "عمرو", "بكر", "خالد")] + [
        "ثم رجع إلى البيت", "ثم رجع إلى البيت حتى الليل", "كان هذا حتى الصباح"]
    reads = [t.replace("في", "فى").replace("الذي", "الذى") for t in truths[:4]] + [
        "ثم رجع إلى البيث", "ثم رجع الى البيت حتى الليل", "كان هذا حى الصباح"]
    rules, evidence = learn_words(truths, reads)
    assert rules == {"فى": "في", "الذى": "الذي"} and evidence["فى"] == [4, 4], (rules, evidence)
    # البيث once (too few), «الى» once: no rules; «على», «حتى» read right: untouched.
    conv = Conventions(words=rules)
    text = "وفى الذى فيه على الذى"
    out, confs, poss = conv.apply(text, [0.9, 0.5, 0.8, 0.7] + [0.9] * (len(text) - 4), [float(i) for i in range(len(text))])
    assert out == "وفى الذي فيه على الذي"  # whole words only: «وفى» is another word, «فيه» no rule
    assert len(confs) == len(poss) == len(out) and poss == [float(i) for i in range(len(text))]
    assert conv.apply("فَى")[0] == "فَي"  # marks do not hide a word from its rule, and the read marks stay
    assert conv.apply("الَّذِى")[0] == "الَّذِي"
    assert learn_words(["قال زيد"] * 2, ["قال \u064b"] * 2)[0] == {}  # a mark read alone is no word
    # With marks, the same readings: the same rules; saved with the model and loaded back.
    assert learn(truths, dict(enumerate(reads))).words == rules
    conv.save(tmp_path)
    assert Conventions.load(tmp_path).words == rules
    assert json.loads((tmp_path / FILE).read_text(encoding="utf-8"))["words"] == rules
    # A newer book learned from readings replaces the word rules as a whole (an empty set too); one learned from the
    # ground truth alone (no readings) keeps them.
    assert Conventions.load(tmp_path).merged_with(learn(truths, dict(enumerate(truths)))).words == {}
    assert Conventions.load(tmp_path).merged_with(learn(truths)).words == rules
    # After a fine-tune: a rule that now adds errors (the model reads «في» right, and the book has «فى» as
    # a word of its own somewhere) is dropped; one that still helps or changes nothing stays.
    held = ["قال فى الدار الذي رآه", "الذي رآه فى"]
    tuned = ["قال فى الدار الذي رآه", "الذى رآه فى"]
    judged = rejudge(Conventions(words=dict(rules)), held, tuned)
    assert judged.words == {"الذى": "الذي"} and judged.evidence["words_gain_after_training"] == {
        "فى": [0, 2], "الذى": [1, 0]}


def test_the_shipped_model_learns_a_prints_dotless_final_ya_as_word_rules():
    """Real lines rendered with a dotless final ya («الذى», «فى»: the old Egyptian print of one shared book) and
    transcribed «الذي», «في»: the shipped model's readings of ten lines teach the rules, and four other lines of the
    same print then read as the book writes them; «روى», «موسى», whose ى is right, stay."""
    from ocr_assets.metrics import cer_norm
    from ocr_assets.models.resolve import load_recognizer
    from ocr_assets_tests.test_images import render_line

    names = ["زيد", "عمرو", "بكر", "خالد", "سعيد", "محمد", "علي", "حسن", "أحمد", "عمر", "يوسف", "موسى", "عيسى", "سالم"]
    truths = [f"وقال {n} الذي روى عنه في المسجد: هذا الذي أتى به" for n in names]
    printed = [t.replace("في ", "فى ").replace("الذي", "الذى") for t in truths]
    base = load_recognizer(None, device="cpu")
    reads = [r.text for r in base.recognize([render_line(t, size=32) for t in printed])]
    conv = learn(truths[:10], dict(enumerate(reads[:10])))
    # Measured (2026-12-04): the model reads «الذى» in 17 of the 20 places, «فى» once (the model's own training
    # books taught it «في» for that glyph), so only the first is a rule.
    assert conv.words.get("الذى") == "الذي" and not {"روى", "موسى", "في"} & set(conv.words), (conv.words, reads)
    after = [conv.apply(r)[0] for r in reads[10:]]
    assert all("الذى" not in a and "روى" in a for a in after), after
    # Measured: CER_norm on the other four lines 0.0510 before, 0.0102 after (rules also for «أتي» and «أت», read
    # for «أتى» 3 and 2 times); bounds ~2x.
    before_cer, after_cer = cer_norm(truths[10:], reads[10:]), cer_norm(truths[10:], after)
    assert before_cer > 0.025 and after_cer < 0.5 * before_cer, (before_cer, after_cer, reads[10:], after)


@pytest.fixture(scope="module")
def glyph_book(tmp_path_factory):
    """A book whose print sets ﷺ as one glyph (Amiri) and whose transcription writes «صلى الله عليه وآله وسلم»."""
    import random

    from ocr_assets.synth.text import LineSampler
    from ocr_assets.text import strip_tashkeel
    from ocr_assets_tests.test_images import render_line, write_pair

    root = tmp_path_factory.mktemp("glyph_book")
    rng, sampler = random.Random(0), LineSampler()
    for i in range(50):
        words = [strip_tashkeel(w) for w in sampler._words(rng)[:6]]
        k = rng.randrange(1, len(words))
        printed = " ".join(words[:k] + ["رسول الله", SAW] + words[k:])
        truth = " ".join(words[:k] + ["رسول الله", SAW_LONG] + words[k:])
        write_pair(root / ("train" if i < 40 else "test"), f"l{i:03d}", truth, render_line(printed, size=30))
    return root


def test_finetune_learns_the_books_expansion_of_a_glyph_and_writes_it_back(glyph_book, tmp_path, monkeypatch):
    """Through the CLI: the shipped model reads the glyph as a few letters; fine-tuned with conventions it writes
    the book's 23-letter expansion where the print has one glyph, and --keep-ligatures gives ﷺ instead."""
    from ocr_assets_tests.test_cli import cli

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("OCR_ASSETS_DATA_ROOT", str(home / "var"))  # no registry: the shipped model is the base
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)

    def score(model=None, gt=glyph_book / "test") -> float:
        done = cli("evaluate", gt, *(["--model", model] if model else []), "--device", "cpu", cwd=home)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout)["cer_norm"]

    def finetune(out, *flags):
        # The default recipe with its own epoch rule (top 4 blocks on cached features, ~3,000 presentations:
        # 30 epochs of these 36 lines); at 8 epochs the learned ligature label ended between 0.025 and 0.079.
        done = cli("finetune", glyph_book / "train", "--out", out, "--batch-size", 4, "--device", "cpu", *flags,
                   cwd=home)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    before = score()
    summary = finetune(tmp_path / "m")
    assert summary["conventions"] == {SAW: SAW_LONG}
    learned = Conventions.load(tmp_path / "m")  # merged model directory
    assert learned.expansions == {SAW: SAW_LONG} and learned.evidence[SAW]["glyph"] >= 30
    assert (tmp_path / "m.adapters" / FILE).is_file()
    after = score(tmp_path / "m")
    print("glyph book CER_norm shipped -> fine-tuned:", before, after)
    # Measured (2026-12-03, 2-core CPU): shipped 0.28-0.30 (the glyph read as «صلم»); fine-tuned 0.013 alone and
    # 0.079-0.082 after the module's other tests, with the same data and seed (CPU training is not bit-reproducible
    # and a missed 23-letter expansion moves this 10-line score by ~0.03 per line). The bound says "learned most of
    # it"; the ligature itself is checked below (--keep-ligatures) and against the fine-tune without conventions.
    assert before > 0.2 and after < 0.12, (before, after)
    kept = tmp_path / "kept.jsonl"
    done = cli("recognize", glyph_book / "test", "--out", kept, "--model", tmp_path / "m", "--device", "cpu",
               "--keep-ligatures", cwd=home)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in kept.read_text(encoding="utf-8").splitlines()]
    assert sum(SAW in r["text"] and SAW_LONG not in r["text"] for r in rows) >= 8  # of 10 lines
    # Without conventions the same fine-tune cannot spell the expansion from the glyph.
    plain = finetune(tmp_path / "plain", "--no-conventions")
    assert plain["conventions"] == {} and not (tmp_path / "plain" / FILE).exists()
    assert score(tmp_path / "plain") > 2 * after


def test_the_conventions_verb_learns_without_training_and_guards_its_out_folder(tmp_path, monkeypatch):
    """`ocr-assets conventions`: a book transcribed with Latin digits and no marks where the print has ٣٠٥ and
    marks; the shipped model plus the learned conventions.json reads it closer to its transcription."""
    from ocr_assets.text import strip_tashkeel
    from ocr_assets_tests.test_cli import assert_one_line_error, cli
    from ocr_assets_tests.test_images import render_line, write_pair

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("OCR_ASSETS_DATA_ROOT", str(home / "var"))
    printed = ["قال أبو عثمان في كتاب الحيوان (١)", "حدثنا محمد بن عبد الله سنة ٣٠٥",
               "فَهَذَا بَابٌ مِنَ العِلْمِ كما قال ١٩٨", "قال أبو عثمان في كتاب الحيوان (٢)"]
    gt = tmp_path / "book"
    for i in range(12):
        text = printed[i % 4]
        write_pair(gt, f"l{i:02d}", strip_tashkeel(text).translate(str.maketrans("٠١٢٣٤٥٦٧٨٩", "0123456789")),
                   render_line(text, size=32))
    done = cli("conventions", gt, "--out", tmp_path / "m", cwd=home)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["digits"] == "latin" and summary["drop_marks"] and summary["lines"] == 12
    assert (tmp_path / "m" / "config.json").is_file() and Conventions.load(tmp_path / "m").digits == "latin"

    def score(*model):
        scored = cli("evaluate", gt, *model, "--device", "cpu", cwd=home)
        assert scored.returncode == 0, scored.stderr[-2000:]
        return json.loads(scored.stdout)["cer"]

    # Measured (2026-12-03): CER 0.136 with the shipped model, 0.008 with its learned conventions; bounds ~2x.
    before, after = score(), score("--model", tmp_path / "m")
    assert before > 0.07 and after < 0.02, (before, after)
    keep = tmp_path / "notes"
    keep.mkdir()
    (keep / "mine.txt").write_text("mine")
    line = assert_one_line_error(cli("conventions", gt, "--out", keep, cwd=home))
    assert "not a model directory" in line and (keep / "mine.txt").read_text() == "mine"


# Spacing around punctuation: a book that writes «قال ، ثم» and «« كلمة »» (two of the five shared books do).
SPACED_BOOK = [f"قال فلان {i} ، ثم « كلمة » وذهب ." for i in range(6)] + [
    f"وقال آخر ، « نعم » ثم سكت {i} ." for i in range(6)]


def test_spacing_rules_are_learned_where_the_book_is_consistent_and_kept_where_they_help():
    from ocr_assets.models.conventions import learn_spacing

    rules, counts = learn_spacing(SPACED_BOOK)
    assert rules["،"] == {"before": True, "after": True} and rules["«"]["after"] is True
    assert rules["»"]["before"] is True and counts["،"]["before"] == [12, 12]
    assert "before" not in rules["«"] or rules["«"]["before"] is True  # «ثم «» and «، «»: always a space here
    # The base model read them the way the other books write them (no space inside the quotes, none before ،).
    readings = {i: t.replace(" ،", "،").replace("« ", "«").replace(" »", "»").replace(" .", ".")
                for i, t in enumerate(SPACED_BOOK)}
    conv = learn(SPACED_BOOK, readings)
    assert conv.spacing["،"] == {"before": True} and conv.spacing["«"] == {"after": True}
    assert conv.spacing["»"] == {"before": True} and conv.spacing["."] == {"before": True}
    # Rules that change nothing the model got wrong are not kept (after «،» it already read a space).
    assert "after" not in conv.spacing["،"] and conv.evidence["spacing_gain"]["، after"] == [0, 0]
    assert all(conv.apply(readings[i])[0] == t for i, t in enumerate(SPACED_BOOK))
    # After a fine-tune the rules are judged again on held-out lines read by the new model: one that learned the
    # quotes' spacing itself keeps only the rules it still needs.
    from ocr_assets.models.conventions import rejudge_spacing

    tuned = [t.replace(" ،", "،").replace(" .", ".") for t in SPACED_BOOK]
    rejudged = rejudge_spacing(learn(SPACED_BOOK, readings), SPACED_BOOK, tuned)
    assert rejudged.spacing == {"،": {"before": True}, ".": {"before": True}}
    assert rejudged.evidence["spacing_gain_after_training"]["« after"] == [0, 0]
    # A big fine-tune's base model reads a bounded number of lines for the spacing rules.
    from ocr_assets.models.conventions import MAX_SPACING_LINES, MAX_WORD_LINES

    many = lines_to_read([re.sub("[0-9] ", "", t) for t in SPACED_BOOK] * 100)  # no digits: no digit lines
    assert MAX_SPACING_LINES + MAX_WORD_LINES < len(many) < MAX_SPACING_LINES + MAX_WORD_LINES + 100 < 1200
    # Where the model already reads the book's spacing, nothing is learned at all.
    assert not learn(SPACED_BOOK, dict(enumerate(SPACED_BOOK))).spacing


def test_spacing_apply_keeps_confidences_positions_and_numbers_aligned(tmp_path):
    conv = Conventions(spacing={"،": {"before": True}, ".": {"before": True}, "(": {"after": False}})
    text = "قال، ( نعم) 3.5."
    out, confs, poss = conv.apply(text, [i / 100 for i in range(len(text))], [float(i) for i in range(len(text))])
    assert out == "قال ، (نعم) 3.5 ."  # a number is never split; the space before the last «.» is added
    assert len(confs) == len(out) and len(poss) == len(out)
    assert confs[3] == confs[4] == 0.03 and poss[3] == 3.0  # the added space takes the mark's confidence, position
    assert Conventions(spacing={"،": {"before": True}}).apply("،قال")[0] == "،قال"  # nothing before: as read
    conv.save(tmp_path)
    assert Conventions.load(tmp_path).spacing == conv.spacing
    # A newer book's spacing replaces the older one's as a whole; a book without punctuation keeps the older rules.
    merged = Conventions.load(tmp_path).merged_with(Conventions(spacing={"(": {"after": True}}))
    assert merged.spacing == {"(": {"after": True}}
    assert Conventions.load(tmp_path).merged_with(learn(["قال فلان ثم ذهب"] * 3)).spacing == conv.spacing
    assert learn(["قال فلان ثم ذهب"] * 3).merged_with(Conventions.load(tmp_path)).spacing == conv.spacing


def test_finetune_judges_the_spacing_rules_again_with_the_fine_tuned_model(tmp_path, monkeypatch):
    """Through the CLI: a print without a space before «،» whose transcription always writes one (as two shared
    books do). Without training, `conventions` learns the rule from the shipped model's readings and the base then
    writes the book's spacing. A fine-tune on the same lines learns the spacing itself (measured: 2 epochs on 18
    lines), so judged again on its held-out lines the rule no longer helps and is dropped — the evidence stays in
    training.json — and the fine-tuned model still writes the book's spacing."""
    from ocr_assets_tests.test_cli import cli
    from ocr_assets_tests.test_images import render_line, write_pair

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("OCR_ASSETS_DATA_ROOT", str(home / "var"))
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)
    words = ["قال", "ذهب", "كتب", "سمع", "نظر", "جلس", "خرج", "دخل"]
    printed = [f"{words[i % 8]} الرجل، ثم {words[(i + 3) % 8]} إليه، وعاد" for i in range(24)]
    for i, text in enumerate(printed):
        write_pair(tmp_path / "book", f"l{i:02d}", text.replace("،", " ،"), render_line(text, size=32))

    def commas(model) -> tuple[int, int]:
        out = tmp_path / f"{model.name}.jsonl"
        done = cli("recognize", tmp_path / "book", "--out", out, "--model", model, "--device", "cpu", cwd=home)
        assert done.returncode == 0, done.stderr[-2000:]
        rows = [json.loads(line)["text"] for line in out.read_text(encoding="utf-8").splitlines()]
        return sum(t.count(" ،") for t in rows), sum(t.count("،") for t in rows)

    done = cli("conventions", tmp_path / "book", "--out", tmp_path / "rules", cwd=home)
    assert done.returncode == 0, done.stderr[-2000:]
    rules = Conventions.load(tmp_path / "rules")
    removed, added = rules.evidence["spacing_gain"]["، before"]
    assert rules.spacing == {"،": {"before": True}} and removed >= 40 and added == 0
    spaced, total = commas(tmp_path / "rules")
    assert total >= 40 and spaced == total

    done = cli("finetune", tmp_path / "book", "--out", tmp_path / "m", "--epochs", 2, "--val-fraction", 0.25,
               "--device", "cpu", cwd=home)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((tmp_path / "m.adapters" / "training.json").read_text(encoding="utf-8"))["conventions"]
    assert record["evidence"]["spacing_gain"]["، before"][0] >= 30  # learned from the base's readings ...
    after = record["evidence"]["spacing_gain_after_training"]["، before"]
    assert after[0] < 2 and record["spacing"] == {}  # ... and dropped: the fine-tuned model reads the space
    assert not (tmp_path / "m" / FILE).exists()
    spaced, total = commas(tmp_path / "m")
    assert total >= 40 and spaced >= 0.9 * total
