import io
import random
import re
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ocr_assets.errors import ConfigError
from ocr_assets.synth import text as corpus
from ocr_assets.synth import fonts
from ocr_assets.synth import lines as synthetic
from ocr_assets.data.records import RawLine
from ocr_assets.text import TASHKEEL, has_tashkeel, normalize, strip_tashkeel


@pytest.fixture(scope="module")
def pool():
    return fonts.discover_fonts()


def _by_name(pool, name):
    return next(f for f in pool if f.name == name)


def _ink_columns(image: Image.Image) -> np.ndarray:
    """Columns that hold ink (dark pixels) in a clean render."""
    return (np.asarray(image) < 128).any(axis=0)


# --- fonts ---------------------------------------------------------------------------------------


def test_discovery_finds_verified_arabic_fonts_book_faces_first(pool):
    assert len(pool) >= 3
    assert [f.name for f in pool] == [f.name for f in fonts.discover_fonts()]  # deterministic
    assert len({f.name for f in pool}) == len(pool)
    for spec in pool:
        assert fonts.REQUIRED <= spec.codepoints
        assert spec.kind in ("naskh", "other")
    book = fonts.book_faces(pool)
    assert book and {f.family for f in book} >= {"Amiri"}
    assert [f.kind for f in pool] == sorted((f.kind for f in pool), key=lambda k: k != "naskh")
    assert not any("Kufi" in f.family for f in pool)
    assert any("Kufi" in f.family for f in fonts.discover_fonts(include_display=True))


def test_fresh_machine_still_has_amiri_from_the_pip_package(monkeypatch):
    monkeypatch.setattr(fonts, "SYSTEM_FONT_DIRS", ())
    monkeypatch.delenv(fonts.ENV_FONT_DIRS, raising=False)
    only_packages = fonts.discover_fonts()
    assert "Amiri-Regular" in {f.name for f in only_packages}
    assert all("fontpkg_amiri" in f.path for f in only_packages)
    assert fonts.book_faces(only_packages)


def test_font_dirs_env_adds_fonts_and_skips_broken_files(tmp_path, monkeypatch, pool):
    amiri = _by_name(pool, "Amiri-Regular")
    shutil.copy(amiri.path, tmp_path / "BookFaceCopy.ttf")
    (tmp_path / "broken.ttf").write_bytes(b"not a font at all")
    monkeypatch.setenv(fonts.ENV_FONT_DIRS, str(tmp_path))
    names = [f.name for f in fonts.discover_fonts()]
    assert "BookFaceCopy" in names and "broken" not in names
    monkeypatch.setenv(fonts.ENV_FONT_DIRS, str(tmp_path / "missing"))
    with pytest.raises(fonts.FontError, match="not a folder"):
        fonts.discover_fonts()


def test_excluding_every_font_is_a_clear_error(pool):
    with pytest.raises(fonts.FontError, match="leaves no font"):
        fonts.select_fonts(pool[:2], exclude=[f.name for f in pool[:2]])


# --- corpus --------------------------------------------------------------------------------------


def test_uthmani_vowels_move_onto_the_modern_spelling():
    assert corpus.vocalise_imlai("ٱلۡعَٰلَمِينَ", "العالمين") == "الْعَالَمِينَ"
    assert corpus.vocalise_imlai("ءَامَنُواْ", "آمنوا") == "آمَنُوا"
    assert corpus.vocalise_imlai("مَّرِيضًا", "مريضا") == "مَرِيضًا"  # no Qurʾānic word-initial shadda
    words = corpus.vocalised_words()
    allowed = set(" ءآأؤإئابةتثجحخدذرزسشصضطظعغفقكلمنهوىي") | set(TASHKEEL)
    assert set("".join(words)) <= allowed  # no ʿUthmānī-only signs reach the labels


def test_lines_are_book_length_normalized_and_reproducible():
    sampler = corpus.LineSampler()
    lines = [sampler.sample(random.Random(k), vocalised=k % 2 == 0) for k in range(300)]
    assert lines == [sampler.sample(random.Random(k), vocalised=k % 2 == 0) for k in range(300)]
    for k, line in enumerate(lines):
        assert line == normalize(line) and line
        assert len(strip_tashkeel(line)) <= 90 + 12  # one trailing mark or marker past the measure at most
        assert has_tashkeel(line) == (k % 2 == 0)
    lengths = [len(strip_tashkeel(line)) for line in lines]
    assert 45 <= np.median(lengths) <= 75
    joined = "".join(lines)
    assert any(d in joined for d in "٠١٢٣٤٥٦٧٨٩")
    for mark in "،.:«»()[]":
        assert mark in joined, mark
    verse_order = " ".join(strip_tashkeel(w) for w in corpus.vocalised_words()[:2000])
    shuffled = [line for line in lines if strip_tashkeel(line) not in verse_order]
    assert len(shuffled) > len(lines) // 3  # many lines are not verbatim verse text



def test_pattern_words_are_vocalised_pseudo_words_outside_the_quran_vocabulary():
    rng = random.Random(7)
    words = [corpus.pattern_word(rng) for _ in range(2000)]
    allowed = set("ءآأؤإئابةتثجحخدذرزسشصضطظعغفقكلمنهوىي") | set(TASHKEEL)
    quran = {strip_tashkeel(w) for w in corpus.vocabulary()}
    for word in words:
        assert word == normalize(word) and set(word) <= allowed and has_tashkeel(word), word
        bare = strip_tashkeel(word)
        assert "ة" not in bare[:-1], word  # tāʾ marbūṭa is written open before a suffix
        assert not re.search("(.)\u0652\\1", word) and "للل" not in bare, word  # doubled letters take shadda
        assert not re.search("اء[\u064b-\u064d]", word), word  # فُعَلَاء takes no tanwīn
        assert not word.endswith("\u0650هُمْ"), word  # the pronoun's u turns i after an i (ـِهِمْ)
    joined = "".join(words)
    assert "الِا" in joined and "الْاِ" not in joined  # hamzat al-wasl after the article: kasra on the lam
    more = [corpus.pattern_word(rng) for _ in range(20000)]
    # li + al- (and before a lam-initial stem one lam fewer: لِلَّيْلِ, never three lams)
    assert "لِلْ" in joined and any(w.startswith("لِلَّ") for w in more)
    assert not any("للل" in strip_tashkeel(w) for w in more)
    assert len({strip_tashkeel(w) for w in words}) > 1800  # a new vocabulary, not a few words
    assert np.mean([strip_tashkeel(w) in quran for w in words]) < 0.05  # the model cannot recall them
    assert corpus.LineSampler().pattern_share == 0  # other streams (dev data, pages) stay the Qurʾān text
    with pytest.raises(ConfigError, match="pattern share"):
        corpus.LineSampler(pattern_share=1.5)
    sampler = corpus.LineSampler(pattern_share=corpus.PATTERN_SHARE)  # the pretraining recipe's mix
    lines = [strip_tashkeel(sampler.sample(random.Random(k), vocalised=False)) for k in range(400)]
    novel = [ln for ln in lines if np.mean([w.strip("،.؛:؟!«»()[]") in quran for w in ln.split()]) < 0.5]
    assert 0.15 < len(novel) / len(lines) < 0.5  # about pattern_share of the lines are mostly pseudo-words


def test_spaced_share_sets_quotes_and_brackets_with_inner_spaces_and_leaves_the_default_stream_alone():
    draws = lambda sampler: [sampler.sample(random.Random(k), vocalised=False) for k in range(600)]  # noqa: E731
    default = draws(corpus.LineSampler())
    assert default == draws(corpus.LineSampler(spaced_share=0.0))  # 0 draws nothing extra from the rng
    assert not any(re.search(r"« |\( | \)| »", ln) for ln in default)  # «word», (word) as before
    spaced = draws(corpus.LineSampler(spaced_share=1.0))
    quoted = [ln for ln in spaced if "«" in ln or "(" in ln]
    assert len(quoted) > 60
    for line in quoted:
        assert not re.search(r"«\S|\S»|\((?!\d)\S|[^\d\s]\)", line), line  # a space inside every quote and bracket
    assert any("و« " in ln for ln in spaced)  # the conjunction glued to the quote, as such editions print it
    mixed = draws(corpus.LineSampler(spaced_share=corpus.SPACED_SHARE))
    with_quotes = [ln for ln in mixed if "«" in ln]
    share = np.mean(["« " in ln for ln in with_quotes])
    assert 0.15 < share < 0.5, share  # about SPACED_SHARE of the lines with quotes
    with pytest.raises(ConfigError, match="spaced share"):
        corpus.LineSampler(spaced_share=-0.1)

# --- rendering -----------------------------------------------------------------------------------


def test_render_is_grayscale_sized_and_right_to_left(pool):
    amiri = _by_name(pool, "Amiri-Regular")
    image = synthetic.render_line("المستخلصات و", amiri, random.Random(1), height=48, degrade=False)
    assert image.mode == "L" and image.height == 48
    ink = _ink_columns(image)
    cols = np.flatnonzero(ink)
    # Split at the widest gap between inked columns: the long first word must be the right-hand run.
    gaps = np.diff(cols)
    cut = int(np.argmax(gaps))
    left_run, right_run = cols[cut] - cols[0] + 1, cols[-1] - cols[cut + 1] + 1
    assert gaps[cut] > 3 and right_run > 3 * left_run


def test_render_refuses_text_the_font_cannot_draw(pool):
    amiri = _by_name(pool, "Amiri-Regular")
    no_quotes = next(f for f in pool if ord("«") not in f.codepoints)
    with pytest.raises(fonts.FontError, match="U\\+00AB"):
        synthetic.render_line("«قال»", no_quotes, random.Random(0))
    rng = random.Random(0)
    assert all(synthetic.choose_font("«قال»", [no_quotes, amiri], rng) is amiri for _ in range(20))


def test_degradation_settings_are_validated():
    with pytest.raises(ValueError, match="blur_p=1.5"):
        synthetic.Degradation(blur_p=1.5)


def test_synthetic_lines_are_real_records_and_deterministic(pool):
    lines = list(synthetic.iter_synthetic_lines(10, seed=7, fonts=pool))
    again = list(synthetic.iter_synthetic_lines(10, seed=7, fonts=pool))
    other = list(synthetic.iter_synthetic_lines(3, seed=8, fonts=pool))
    assert [(r.image, r.text_bytes) for r in lines] == [(r.image, r.text_bytes) for r in again]
    assert [r.image for r in other] != [r.image for r in lines[:3]]
    names = {f.name for f in pool}
    for record in lines:
        assert isinstance(record, RawLine) and record.source == "synthetic"
        assert record.document.removeprefix("synthetic-") in names
        image = Image.open(io.BytesIO(record.image))
        assert image.format == "PNG" and image.mode == "L"
        assert 30 <= image.height <= 160 and image.width > image.height
        pixels = np.asarray(image)
        assert pixels.min() < 100 and np.median(pixels) > 150  # dark ink on light paper
        text = record.text_bytes.decode("utf-8")
        font = _by_name(pool, record.document.removeprefix("synthetic-"))
        assert text == normalize(text) and font.covers(text)


def test_vocalised_fraction_and_font_exclusion_are_honoured(pool):
    held_out = fonts.book_faces(pool)[0].family
    kept = fonts.select_fonts(pool, exclude=(held_out,))
    for fraction in (0.2, 0.8):
        texts = [synthetic.line_text(3, k, kept, fraction) for k in range(300)]
        share = np.mean([has_tashkeel(text) for text, _ in texts])
        assert abs(share - fraction) < 0.08, (fraction, share)
        assert all(font.family != held_out for _, font in texts)


def test_shard_is_independent_of_worker_count(tmp_path, pool):
    subset = fonts.book_faces(pool)[:6]
    one = synthetic.render_shard(tmp_path / "one.parquet", 12, seed=5, fonts=subset, workers=1, chunk=4)
    two = synthetic.render_shard(tmp_path / "two.parquet", 12, seed=5, fonts=subset, workers=2, chunk=4)
    assert one.lines == two.lines == 12
    a, b = pq.read_table(one.path), pq.read_table(two.path)
    assert a.column_names == list(synthetic.SHARD_COLUMNS)
    assert a.equals(b)
    assert a.column("line_id").to_pylist() == [f"synthetic-5-{k:08d}" for k in range(12)]


def test_legibility_guard_notices_a_vanished_word(pool):
    clean = synthetic.render_line("قال أبو عبيدة الكتاب", _by_name(pool, "Amiri-Regular"), random.Random(2), 60,
                                  degrade=False)
    gray = np.asarray(clean)
    alpha = (255 - gray.astype(np.float32)) / 255
    assert synthetic._legible(alpha, gray)
    erased = gray.copy()
    cols = np.flatnonzero(_ink_columns(clean))
    erased[:, cols[0] : cols[0] + (cols[-1] - cols[0]) // 4] = 255  # the leftmost (last) word fades away
    assert not synthetic._legible(alpha, erased)
    faint = np.clip(gray.astype(np.int16) + 180, 0, 255).astype(np.uint8)  # ink barely darker than paper
    assert not synthetic._legible(alpha, faint)


def test_neighbour_fragments_stay_in_the_margins(pool):
    amiri = _by_name(pool, "Amiri-Regular")
    off = dict(rotate_p=0, shear_p=0, justify_p=0, stroke_gamma=0, spread_p=0, erode_p=0, blur_p=0, lowres_p=0,
               noise_p=0, texture_p=0, binarize_p=0, jpeg_p=0)
    text, other = "قال أبو عبيدة في كتاب الخيل", "وذكر الأصمعي أن العرب تقول ذلك"

    def edge_ink(neighbour_p, seed):
        image = synthetic.render_line(text, amiri, random.Random(seed), 80, neighbours=(other, other),
                                      degradation=synthetic.Degradation(neighbour_p=neighbour_p, **off))
        pixels = np.asarray(image)
        return bool((pixels[0] < 128).any() or (pixels[-1] < 128).any())

    assert not any(edge_ink(0.0, seed) for seed in range(6))  # margins are clean without neighbours
    assert sum(edge_ink(1.0, seed) for seed in range(6)) >= 3  # fragments of the lines above/below show


def test_some_lines_carry_an_honorific_ligature_drawn_by_a_face_that_has_it(pool):
    """About LIGATURE_SHARE of the lines get ﷺ / ﷻ as one glyph, labelled with the Unicode ligature."""
    kept = fonts.select_fonts(pool)
    plans = [synthetic.line_text(5, k, kept) for k in range(600)]
    with_glyph = [(text, font) for text, font in plans if "\ufdfa" in text or "\ufdfb" in text]
    assert 0.5 * synthetic.LIGATURE_SHARE * 600 <= len(with_glyph) <= 1.5 * synthetic.LIGATURE_SHARE * 600
    assert all(font.covers(text) for text, font in with_glyph) and "\ufdf2" not in "".join(t for t, _ in plans)
    text, font, png = synthetic.synthetic_line(5, next(k for k, (t, _) in enumerate(plans) if "\ufdfa" in t), kept)
    assert "\ufdfa" in text and Image.open(io.BytesIO(png)).height >= 8
    # A pool with no face that draws the glyph keeps its lines as they were.
    plain = [f for f in kept if not f.covers("\ufdfa\ufdfb")]
    assert not any("\ufdfa" in synthetic.line_text(5, k, plain)[0] for k in range(300))
