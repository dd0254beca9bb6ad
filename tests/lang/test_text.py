"""Text normalisation, sentence splitting and corpus splits."""

from usrasr.prepare.splits import SPLITS, split_of, split_sentences
from usrasr.lang.text import normalize_text, split_sentences as sentence_split


def test_normalize_numbers_symbols_case_punctuation():
    assert normalize_text("In 1990, he paid $5 for 3 apples & 2nd-rate pears -- 45% off!") == (
        "IN NINETEEN NINETY HE PAID FIVE DOLLARS FOR THREE APPLES AND SECOND RATE PEARS FORTY FIVE PERCENT OFF")
    assert normalize_text("Don't say \u201chello\u201d to O\u2019Brien's dog.") == "DON'T SAY HELLO TO O'BRIEN'S DOG"
    assert normalize_text("It cost 1,000,000 dollars.") == "IT COST ONE MILLION DOLLARS"
    assert normalize_text("Caf\u00e9 'quoted' words") == "CAFE QUOTED WORDS"
    assert normalize_text("...!?") == ""


def test_sentence_split_keeps_abbreviations():
    assert sentence_split("Mr. Smith came. Then he left! Did he? Yes.") == [
        "Mr. Smith came.", "Then he left!", "Did he?", "Yes."]


def test_splits_are_stable_and_disjoint():
    sentences = [f"SENTENCE NUMBER {i} IS HERE" for i in range(5000)] * 2
    splits = split_sentences(sentences)
    assert set(splits) == set(SPLITS)
    seen = [s for split in splits.values() for s in split]
    assert len(seen) == len(set(seen)) == 5000  # deduplicated, each sentence once
    for split, members in splits.items():
        assert all(split_of(s) == split for s in members)
    # every split gets a share, train_text the largest
    sizes = {k: len(v) for k, v in splits.items()}
    assert min(sizes.values()) > 0 and sizes["train_text"] == max(sizes.values())
    # a smaller source never moves a sentence to another split
    again = split_sentences(sentences[:1000])
    for split, members in again.items():
        assert set(members) <= set(splits[split])
