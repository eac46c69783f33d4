import unicodedata

import pytest

from ocr_assets import text
from ocr_assets.settings import shared_data_dir


def test_nfd_becomes_nfc():
    composed = "إلى آخره"
    decomposed = unicodedata.normalize("NFD", composed)
    assert decomposed != composed
    assert text.normalize(decomposed) == composed


def test_bidi_marks_bom_and_crlf_are_removed():
    messy = "\ufeff\u200fبسم\u200e  الله\u202b الرحمن\u202c\r\n"
    assert text.normalize(messy) == "بسم الله الرحمن"


def test_tashkeel_kept_in_normalized_text_but_stripped_in_metric_view():
    vocalised = "كَتَبَ الكِتَابَ"
    assert text.normalize(vocalised) == vocalised and text.has_tashkeel(vocalised)
    assert text.strip_tashkeel("كَتَبَ الكِتَـابَ") == "كتب الكتاب"  # tatweel goes too


def test_arabic_ratio_counts_letters_only():
    assert text.arabic_ratio("بسم الله 123") == 1.0
    assert text.arabic_ratio("hello world") == 0.0
    assert text.arabic_ratio("١٢٣ (4)") == 0.0  # no letters at all
    assert text.arabic_ratio("قال ab") == pytest.approx(3 / 5)


def test_normalize_is_idempotent():
    once = text.normalize(unicodedata.normalize("NFD", " \u200fأَوَّلُ  الكتاب\r\n"))
    assert text.normalize(once) == once


@pytest.mark.shared_data
def test_shared_ground_truth_is_nfd_and_normalizes_to_nfc():
    root = shared_data_dir()
    if root is None or not (root / "ocr_gs_print").is_dir():
        pytest.skip("../shared/data/ocr_gs_print is absent (developer checkout only)")
    files = sorted((root / "ocr_gs_print").glob("*/00001*.gt.txt"))[:50]
    raw = [f.read_text(encoding="utf-8") for f in files]
    assert any(unicodedata.normalize("NFC", r) != r for r in raw)  # the stored text really is decomposed
    for r in raw:
        assert unicodedata.is_normalized("NFC", text.normalize(r))
