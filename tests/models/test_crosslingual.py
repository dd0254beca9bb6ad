import itertools
import math

import pytest
import torch
from torch.nn.utils.rnn import pad_sequence
from panphon.distance import Distance
from torch import nn

from usrasr.lang.inventory import project_phone_ipa
from usrasr.lang.phones import SILENCE, SPOKEN_NOISE
from usrasr.lang.symbols import PHONE_TOKENS
from usrasr.models.acoustic import load_model, save_model
from usrasr.models.crosslingual import crosslingual_ctc_model, greedy_lengths
from usrasr.models.encoder import EncoderConfig, SslEncoder, save_encoder
from usrasr.utils.errors import UsrasrError

UNIVERSAL = ["<blk>", "s", "a", "i", "m", "t", "ʃ", "u", "o", "e", "n", "k"]
TOKENS = list(PHONE_TOKENS.symbols)


def _just_encoder(path, with_head=True, seed=0, phones=UNIVERSAL):
    torch.manual_seed(seed)
    encoder = SslEncoder(EncoderConfig(arch="tdnn", hidden_dim=16, num_layers=2, dropout=0.0))
    head = nn.Linear(16, len(phones))
    save_encoder(path, encoder, {"method": "just"}, *((head, phones) if with_head else ()))
    return encoder.eval(), head


def _universal_posteriors(encoder, head, feats, lens):
    """The recogniser's own phone posteriors, computed independently of the target model."""
    with torch.no_grad():
        layers, out_lens = encoder(feats, lens)
        return torch.softmax(head(layers[-1]), dim=-1), out_lens


def _expected_weights(neighbours, temperature):
    """Token -> {universal phone: weight}, from panphon's distances computed here."""
    distance = Distance().weighted_feature_edit_distance
    ipa = project_phone_ipa()
    weights = {}
    for token in TOKENS[1:]:
        if token == SILENCE:
            weights[token] = {"<blk>": 1.0}
        elif token in ipa:
            near = sorted(UNIVERSAL[1:], key=lambda p: distance(ipa[token], p))[:neighbours]
            nearest = distance(ipa[token], near[0])
            weights[token] = {p: math.exp(-(distance(ipa[token], p) - nearest) / temperature) for p in near}
        else:
            weights[token] = {}
    return weights


@pytest.mark.parametrize("neighbours, temperature", [(1, 1.0), (3, 0.5)])
def test_each_token_scores_the_weighted_posteriors_of_its_nearest_universal_phones(tmp_path, neighbours, temperature):
    encoder, head = _just_encoder(tmp_path / "encoder.pt")
    model, mapping = crosslingual_ctc_model([tmp_path / "encoder.pt"], TOKENS, project_phone_ipa(), SILENCE,
                                            neighbours, temperature)
    weights = _expected_weights(neighbours, temperature)
    assert mapping[SPOKEN_NOISE] == {} and mapping[SILENCE] == {"<blk>": 1.0}
    assert {t: set(m) for t, m in mapping.items()} == {t: set(w) for t, w in weights.items()}
    assert all(mapping[t][p] == pytest.approx(w, abs=1e-4) for t in weights for p, w in weights[t].items())
    if neighbours == 1:
        assert (next(iter(mapping["S"])), next(iter(mapping["SH"])), next(iter(mapping["M"]))) == ("s", "ʃ", "m")

    feats, lens = torch.randn(2, 37, 80), torch.tensor([37, 30])
    posteriors, out_lens = _universal_posteriors(encoder, head, feats, lens)
    columns = [posteriors[..., 0]] + [sum((w * posteriors[..., UNIVERSAL.index(p)] for p, w in weights[t].items()),
                                          torch.zeros_like(posteriors[..., 0])) for t in TOKENS[1:]]
    expected = torch.log(torch.stack(columns, dim=-1).clamp(min=1e-30))
    with torch.no_grad():
        got, got_lens = model(feats, lens)
    assert torch.equal(got_lens, out_lens)
    for b, n in enumerate(out_lens.tolist()):
        assert torch.allclose(got[b, :n], torch.log_softmax(expected[b, :n], dim=-1), atol=1e-4)
    assert got[..., TOKENS.index(SPOKEN_NOISE)].max() < -50

    save_model(tmp_path / "model.pt", model, TOKENS)
    with torch.no_grad():
        assert torch.allclose(load_model(tmp_path / "model.pt").model(feats, lens)[0], got)


def test_greedy_lengths_count_the_runs_of_the_best_class_other_than_blank(tmp_path):
    encoder, head = _just_encoder(tmp_path / "encoder.pt")
    model, _ = crosslingual_ctc_model([tmp_path / "encoder.pt"], TOKENS, project_phone_ipa(), SILENCE)
    feats = [torch.randn(n, 80) for n in (37, 30, 52)]
    expected = []
    for f in feats:
        posteriors, n = _universal_posteriors(encoder, head, f[None], torch.tensor([len(f)]))
        expected.append(sum(1 for best, _ in itertools.groupby(posteriors[0, :int(n)].argmax(-1).tolist()) if best))
    with torch.no_grad():
        class_scores = [model.class_scores(pad_sequence(feats[i:i + 2], batch_first=True),
                                           torch.tensor([len(f) for f in feats[i:i + 2]])) for i in (0, 2)]
    assert greedy_lengths(class_scores) == expected


def test_the_utterance_prior_divides_each_class_by_its_mean_over_the_utterance(tmp_path):
    _just_encoder(tmp_path / "encoder.pt")
    model, _ = crosslingual_ctc_model([tmp_path / "encoder.pt"], TOKENS, project_phone_ipa(), SILENCE, 3)
    feats, lens = torch.randn(2, 41, 80), torch.tensor([41, 26])
    with torch.no_grad():
        scores, out_lens = model.class_scores(feats, lens)
        plain = model.token_log_probs(scores, out_lens)
        model.config.utterance_prior_scale = 0.5
        divided = model.token_log_probs(scores, out_lens)
        for b, n in enumerate(out_lens.tolist()):
            posteriors = torch.softmax(scores[b, :n], -1)
            reads = (posteriors / posteriors.mean(0).sqrt()) @ model.token_map.T
            expected = torch.log_softmax(torch.log(reads.clamp(min=1e-30)), -1)
            assert torch.allclose(divided[b, :n], expected, atol=1e-4)
            # padding does not enter the mean: the utterance alone reads the same
            alone = model.token_log_probs(scores[b:b + 1, :n], out_lens[b:b + 1])[0]
            assert torch.allclose(alone, divided[b, :n], atol=1e-5)
    assert not torch.allclose(plain, divided)
    save_model(tmp_path / "model.pt", model, TOKENS)
    assert load_model(tmp_path / "model.pt").model.config.utterance_prior_scale == 0.5


def test_an_encoder_without_a_phone_head_is_refused(tmp_path):
    _just_encoder(tmp_path / "encoder.pt", with_head=False)
    with pytest.raises(UsrasrError, match="--method just"):
        crosslingual_ctc_model([tmp_path / "encoder.pt"], TOKENS, project_phone_ipa(), SILENCE)
    _just_encoder(tmp_path / "encoder.pt")
    with pytest.raises(UsrasrError, match="at least one universal phone"):
        crosslingual_ctc_model([tmp_path / "encoder.pt"], TOKENS, project_phone_ipa(), SILENCE, 0)


def test_several_encoders_read_as_one_average_their_phone_log_posteriors(tmp_path):
    """Two encoders: the class scores are the mean of each recogniser's own phone log-posteriors
    (computed here independently), the token map and the prior act on that, and the whole model
    saves and loads; the same encoder twice reads exactly as it does alone."""
    first, second = tmp_path / "a.pt", tmp_path / "b.pt"
    encoders = [_just_encoder(first), _just_encoder(second, seed=1)]
    model, mapping = crosslingual_ctc_model([first, second], TOKENS, project_phone_ipa(), SILENCE, 3)
    alone, alone_mapping = crosslingual_ctc_model([first], TOKENS, project_phone_ipa(), SILENCE, 3)
    assert mapping == alone_mapping and torch.equal(model.token_map, alone.token_map)
    feats, lens = torch.randn(2, 41, 80), torch.tensor([41, 26])
    with torch.no_grad():
        scores, out_lens = model.class_scores(feats, lens)
        expected = torch.stack([_universal_posteriors(e, h, feats, lens)[0].log() for e, h in encoders]).mean(0)
        for b, n in enumerate(out_lens.tolist()):
            assert torch.allclose(scores[b, :n], expected[b, :n], atol=1e-4)
        model.config.utterance_prior_scale = 0.5
        got = model(feats, lens)[0]
    save_model(tmp_path / "model.pt", model, TOKENS)
    loaded = load_model(tmp_path / "model.pt").model
    assert loaded.config.members == 2 and torch.allclose(loaded(feats, lens)[0], got)
    twice, _ = crosslingual_ctc_model([first, first], TOKENS, project_phone_ipa(), SILENCE, 3)
    with torch.no_grad():
        assert torch.allclose(twice(feats, lens)[0], alone(feats, lens)[0], atol=1e-5)


def test_encoders_of_different_universal_phones_are_not_read_as_one(tmp_path):
    _just_encoder(tmp_path / "a.pt")
    _just_encoder(tmp_path / "b.pt", phones=UNIVERSAL[:-1])
    with pytest.raises(UsrasrError, match="differ in their universal phones or their shape"):
        crosslingual_ctc_model([tmp_path / "a.pt", tmp_path / "b.pt"], TOKENS, project_phone_ipa(), SILENCE)
