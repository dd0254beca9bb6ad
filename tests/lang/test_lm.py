"""Per-word log-probabilities under an ARPA LM, against the LM's own conditionals."""

import math

import pytest

from usrasr.lang.lm import held_out_per_word_logprob, read_arpa, train_arpa

TEXT = ["A B C", "A B", "B C A", "C A B C", "A C", "B A"] * 5


def test_per_word_logprob_averages_the_conditionals_and_leaves_out_unknown_words(tmp_path):
    lm = read_arpa(train_arpa(TEXT, 2, tmp_path / "lm.arpa"))
    sentences = ["A B C", "C Z A"]  # Z is not in the vocabulary
    expected = [lm.conditional(("<s>",), "A"), lm.conditional(("A",), "B"), lm.conditional(("B",), "C"),
                lm.conditional(("C",), "</s>"), lm.conditional(("<s>",), "C"), lm.conditional(("Z",), "A"),
                lm.conditional(("A",), "</s>")]
    assert lm.conditional(("C",), "Z") == -math.inf
    assert lm.per_word_logprob(sentences) == pytest.approx(sum(expected) / len(expected))


def test_held_out_text_is_scored_by_an_lm_trained_on_the_rest(tmp_path):
    every = 3
    lm = read_arpa(train_arpa([s for i, s in enumerate(TEXT) if i % every], 2, tmp_path / "rest.arpa"))
    assert held_out_per_word_logprob(TEXT, 2, every) == pytest.approx(lm.per_word_logprob(TEXT[::every]))
