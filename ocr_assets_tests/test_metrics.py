import pytest

from ocr_assets import metrics


def test_cer_counts_tashkeel_but_cer_norm_does_not():
    ref = ["كَتَبَ الكِتَابَ"]
    hyp = ["كتب الكتاب"]
    s = metrics.score(ref, hyp)
    assert s.cer == pytest.approx(6 / len("كَتَبَ الكِتَابَ"))  # six marks deleted
    assert s.cer_norm == 0.0
    assert s.wer == 1.0 and s.wer_norm == 0.0


def test_nfd_and_bidi_marks_do_not_count_as_errors():
    import unicodedata

    ref = [unicodedata.normalize("NFD", "إلى آخره")]
    hyp = ["\u200fإلى  آخره\u200e"]
    assert metrics.cer(ref, hyp) == 0.0


def test_corpus_cer_is_edits_over_reference_chars_and_groups_split():
    refs = ["abcd", "ab"]
    hyps = ["abxd", ""]
    assert metrics.cer(refs, hyps) == pytest.approx(3 / 6)
    by = metrics.score_by_group(refs, hyps, ["b1", "b2"])
    assert by["b1"].cer == pytest.approx(0.25)
    assert by["b2"].cer == 1.0
    assert by["__all__"].lines == 2


def test_confusions_report_substitutions():
    conf = metrics.char_confusions(["باب", "باب"], ["ناب", "ناب"])
    assert conf[0] == ("ب", "ن", 2)


def test_confusions_with_marks_kept_count_mark_and_space_edits():
    refs, hyps = ["كتب « الحيوان »"], ["كَتَبَ « الحيوان»"]
    assert metrics.char_confusions(refs, hyps) == [(" ", "", 1)]  # CER_norm's view: marks are not edits
    kept = metrics.char_confusions(refs, hyps, top=None, keep_marks=True)
    assert dict(((a, b), n) for a, b, n in kept) == {("", "\u064e"): 3, (" ", ""): 1}
    assert metrics.char_confusions(refs, hyps, top=1, keep_marks=True) == [("", "\u064e", 3)]


def test_perfect_bleu_and_worse_bleu():
    assert metrics.score(["قال أبو عثمان في كتاب الحيوان"], ["قال أبو عثمان في كتاب الحيوان"]).bleu == pytest.approx(100.0)
    assert metrics.score(["قال أبو عثمان في كتاب الحيوان"], ["قال عثمان كتاب"]).bleu < 50
