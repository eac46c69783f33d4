"""Pseudo ground truth for page lines: alignment of recognized lines to a page-level transcription."""

import random
import unicodedata

from PIL import Image

from ocr_assets import metrics
from ocr_assets.synth.fonts import book_faces, discover_fonts
from ocr_assets.data.gt_folder import iter_gt_folder
from ocr_assets.synth.lines import render_line
from ocr_assets.data.validation import validate_lines
from ocr_assets.models.resolve import load_recognizer
from benchmarks.pagekit.align import align_lines, align_page, write_pseudo_gt
from ocr_assets.text import normalize

TRANSCRIPT = ("قال أبو عثمان في كتاب الحيوان وكذلك إن تكلّم بلغة واحدة حدثنا محمد بن عبد الله سنة ٢٤١ "
              "رضي الله عنه وعن أبيه")


def span_of(text: str, words: str) -> tuple[int, int]:
    start = text.index(words)
    return start, start + len(words)


def test_alignment_spans_of_hand_made_lines_with_errors():
    hyps = [
        "ا[١٣]]",  # page-number header: not in the transcription
        "[] قال ابو عثمن في كتاب الحيوان []",  # frame rules read as brackets, hamza and a letter missed
        "وكذلك ان تكلم بلغه",  # its last word (واحدة) not read at all
        "حَدَّثنا محمد بن عبد الله سنه ٢٤١ ]",  # marks the transcript lacks, ta marbuta read as ha
    ]  # the page's last line (رضي الله عنه وعن أبيه) was missed by the segmentation
    nfd = unicodedata.normalize("NFD", TRANSCRIPT + "\n")  # pages_dev transcriptions are NFD
    alignment = align_lines(hyps, nfd)
    text = alignment.transcript
    assert text == normalize(TRANSCRIPT)
    spans = [(s.start, s.end) for s in alignment.lines]
    assert spans[0] == (0, 0) and not alignment.lines[0].anchored
    assert spans[1] == span_of(text, "قال أبو عثمان في كتاب الحيوان") == (0, 29)
    assert spans[2] == span_of(text, "وكذلك إن تكلّم بلغة")  # the shadda of the transcript is kept
    assert spans[3] == span_of(text, "حدثنا محمد بن عبد الله سنة ٢٤١")
    assert [s.text for s in alignment.lines] == ["", "قال أبو عثمان في كتاب الحيوان", "وكذلك إن تكلّم بلغة",
                                                 "حدثنا محمد بن عبد الله سنة ٢٤١"]
    assert alignment.unassigned_text() == ["واحدة", "رضي الله عنه وعن أبيه"]

    lines, _ = align_page(hyps, nfd, max_cer=0.35)
    assert [ln.kept for ln in lines] == [False, True, True, True]
    assert lines[0].cer == 1.0
    # 4 brackets + 2 spaces + alif for hamza + missing alif over 29 characters
    assert abs(lines[1].cer - metrics.line_cer("قال أبو عثمان في كتاب الحيوان", hyps[1])) < 1e-12
    assert 0.2 < lines[1].cer < 0.35
    assert align_page(hyps, nfd, max_cer=0.2)[0][1].kept is False


def test_alignment_gives_a_misread_edge_word_to_its_line_and_nothing_to_noise():
    text = "الحمد لله رب العالمين الرحمن الرحيم مالك يوم الدين"
    # The first line's last word is badly misread but still read; the second line is two lines merged into noise.
    alignment = align_lines(["الحمد لله رب العلمبن", "بببب", "مالك يوم الدين"], text)
    assert [s.text for s in alignment.lines] == ["الحمد لله رب العالمين", "", "مالك يوم الدين"]
    assert alignment.unassigned_text() == ["الرحمن الرحيم"]
    assert align_lines([], text).unassigned_text() == [text]
    assert [s.text for s in align_lines(["الحمد لله"], "").lines] == [""]


LINES = ["قال أبو عثمان في كتاب الحيوان", "وكذلك إن تكلم بلغة واحدة فهو", "حدثنا محمد بن عبد الله سنة ٢٤١",
         "فهذا باب من العلم كما قال"]


def render_page(font) -> Image.Image:
    rng = random.Random(7)
    rendered = [render_line(t, font, rng, height=44, degrade=False) for t in LINES]
    width, gap = max(im.width for im in rendered) + 80, 26
    page = Image.new("L", (width, sum(im.height for im in rendered) + gap * (len(rendered) + 1)), 255)
    y = gap
    for im in rendered:
        page.paste(im, (width - 40 - im.width, y))  # right-aligned, as an Arabic page
        y += im.height + gap
    return page


def test_pseudo_gt_of_a_rendered_page_matches_its_lines(tmp_path):
    fonts = book_faces(discover_fonts())
    font = next(f for f in fonts if "Amiri" in f.name) if any("Amiri" in f.name for f in fonts) else fonts[0]
    pages = tmp_path / "pages"
    pages.mkdir()
    render_page(font).save(pages / "p1.png")
    # The transcription is one paragraph, as page-level ground truth comes (NFD, no line breaks).
    (pages / "p1.gt.txt").write_text(unicodedata.normalize("NFD", " ".join(LINES)) + "\n", encoding="utf-8")
    out = tmp_path / "gt"
    summary = write_pseudo_gt([pages / "p1.png"], load_recognizer(None, device="cpu"), out, max_cer=0.35)
    assert summary["pages"] == 1 and summary["lines"] == len(LINES) and summary["kept"] == len(LINES)
    written = sorted((out / "p1").glob("*.gt.txt"))
    assert [p.name for p in written] == [f"p1_l{i:02d}.gt.txt" for i in range(len(LINES))]
    # The labels come from the transcription's words, not from the reading: exact even where the model misread
    # (here it reads the year ٢٤١ as "21").
    assert [p.read_text(encoding="utf-8").strip() for p in written] == LINES
    for png in (out / "p1").glob("*.png"):
        with Image.open(png) as im:
            assert im.mode == "L" and 20 <= im.height <= 120 and im.width > 100
    pairs, quarantine = validate_lines(iter_gt_folder(out))  # what finetune_gt_dir reads
    assert pairs.num_rows == len(LINES) and quarantine.num_rows == 0
    assert (out / "alignment.jsonl").read_text(encoding="utf-8").count("\n") == len(LINES)
