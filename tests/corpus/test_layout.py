from usrasr.corpus.layout import CorpusLayout


def test_training_takes_the_lowest_order_lm_and_decoding_the_highest(tmp_path):
    layout = CorpusLayout(tmp_path)
    assert layout.lm("phone", missing_ok=True) is None and layout.lms("phone") == []
    layout.lm_dir.mkdir()
    for name in ("phone_5gram.arpa", "phone_2gram.arpa", "phone_10gram.arpa", "word_3gram.arpa", "phone_xgram.arpa"):
        (layout.lm_dir / name).write_text("")
    assert [p.name for p in layout.lms("phone")] == ["phone_2gram.arpa", "phone_5gram.arpa", "phone_10gram.arpa"]
    assert layout.lm("phone").name == "phone_2gram.arpa" and layout.decoding_lm("phone").name == "phone_10gram.arpa"
    assert layout.lm("word") == layout.decoding_lm("word") == layout.lm_dir / "word_3gram.arpa"


def test_a_decoding_phone_lm_below_the_training_order_is_refused():
    import pytest

    from usrasr.prepare.text import LmOrders
    from usrasr.utils.errors import UsrasrError

    with pytest.raises(UsrasrError, match="below the training"):
        LmOrders(phone=3, decoding_phone=2)
    assert LmOrders(phone=3, decoding_phone=3).decoding_phone == 3
