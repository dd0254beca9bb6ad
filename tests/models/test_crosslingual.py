import itertools
import math

import panphon
import pytest
import torch
from panphon.distance import Distance
from torch import nn

from usrasr.lang.inventory import project_phone_ipa
from usrasr.lang.phones import SILENCE, SPOKEN_NOISE
from usrasr.lang.symbols import PHONE_TOKENS
from usrasr.models.acoustic import load_model, save_model
from usrasr.lang.ipa import articulatory_features
from usrasr.models.crosslingual import crosslingual_ctc_model, expected_lengths
from usrasr.models.encoder import (
    ArticulatoryFeatures, EncoderConfig, SslEncoder, load_articulatory_features, load_phone_head, save_encoder,
)
from usrasr.utils.errors import UsrasrError

UNIVERSAL = ["<blk>", "s", "a", "i", "m", "t", "ʃ", "u", "o", "e", "n", "k"]
TOKENS = list(PHONE_TOKENS.symbols)


def _just_encoder(path, with_head=True):
    torch.manual_seed(0)
    encoder = SslEncoder(EncoderConfig(arch="tdnn", hidden_dim=16, num_layers=2, dropout=0.0))
    head = nn.Linear(16, len(UNIVERSAL))
    save_encoder(path, encoder, {"method": "just"}, *((head, UNIVERSAL) if with_head else ()))
    return encoder.eval(), head


def _just_encoder_with_features(path):
    """A JUST encoder whose head is a per-phone part plus panphon's features through a feature head,
    folded as pretraining folds it; returns the encoder and the two parts."""
    torch.manual_seed(1)
    encoder = SslEncoder(EncoderConfig(arch="tdnn", hidden_dim=16, num_layers=2, dropout=0.0))
    names, rows = articulatory_features(UNIVERSAL[1:])
    values = torch.tensor([[0.0] * len(names)] + rows, dtype=torch.float32)
    own, feature_head = nn.Linear(16, len(UNIVERSAL)), nn.Linear(16, len(names))
    folded = nn.Linear(16, len(UNIVERSAL))
    with torch.no_grad():
        folded.weight.copy_(own.weight + values @ feature_head.weight)
        folded.bias.copy_(own.bias + values @ feature_head.bias)
    save_encoder(path, encoder, {"method": "just"}, folded, UNIVERSAL,
                 ArticulatoryFeatures(feature_head, names, values))
    return encoder.eval(), own, feature_head, names


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
    model, mapping = crosslingual_ctc_model(tmp_path / "encoder.pt", TOKENS, project_phone_ipa(), SILENCE,
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


def test_the_features_reading_gives_each_token_its_own_features_and_its_neighbours_per_phone_parts(tmp_path):
    encoder, own, feature_head, names = _just_encoder_with_features(tmp_path / "encoder.pt")
    loaded = load_articulatory_features(tmp_path / "encoder.pt")
    assert loaded.names == names and torch.equal(loaded.head.weight, feature_head.weight)
    ipa = project_phone_ipa()
    model, mapping = crosslingual_ctc_model(tmp_path / "encoder.pt", TOKENS, ipa, SILENCE, 3, 0.5, "features")
    weights = _expected_weights(3, 0.5)
    spoken = [t for t in TOKENS[1:] if t != SILENCE and weights[t]]
    assert model.config.classes == 1 + len(spoken) and mapping[SILENCE] == {"<blk>": 1.0}

    table = panphon.FeatureTable()

    def expected_row(token):  # panphon's features of the token's own IPA (length folded), computed here
        segments = table.ipa_segs(ipa[token].replace("ː", ""))
        values = torch.tensor(articulatory_features(segments)[1], dtype=torch.float32).mean(0)
        share = torch.tensor(list(weights[token].values()))
        index = [UNIVERSAL.index(p) for p in weights[token]]
        weight = (share / share.sum()) @ own.weight[index] + values @ feature_head.weight
        bias = (share / share.sum()) @ own.bias[index] + values @ feature_head.bias
        return weight, bias

    feats, lens = torch.randn(2, 37, 80), torch.tensor([37, 30])
    with torch.no_grad():
        layers, out_lens = encoder(feats, lens)
        logits = [layers[-1] @ own.weight[0] + own.bias[0]]  # the blank: no features
        for token in spoken:
            weight, bias = expected_row(token)
            logits.append(layers[-1] @ weight + bias)
        posteriors = torch.softmax(torch.stack(logits, -1), -1)
        got, got_lens = model(feats, lens)
    assert torch.equal(got_lens, out_lens)
    columns = {0: posteriors[..., 0], TOKENS.index(SILENCE): posteriors[..., 0]}
    columns.update({TOKENS.index(t): posteriors[..., 1 + i] for i, t in enumerate(spoken)})
    reads = torch.stack([columns.get(i, torch.zeros_like(posteriors[..., 0])) for i in range(len(TOKENS))], -1)
    for b, n in enumerate(out_lens.tolist()):
        expected = torch.log_softmax(torch.log(reads[b, :n].clamp(min=1e-30)), -1)
        assert torch.allclose(got[b, :n], expected, atol=1e-4)
    assert got[..., TOKENS.index(SPOKEN_NOISE)].max() < -50


def test_a_token_that_is_a_universal_phone_reads_its_logit_by_features_as_the_head_does(tmp_path):
    """One neighbour, and a token whose IPA is that universal phone: its own part and its features
    are the phone's, so its logit is the folded head's row for the phone."""
    _just_encoder_with_features(tmp_path / "encoder.pt")
    model, _ = crosslingual_ctc_model(tmp_path / "encoder.pt", TOKENS, {"S": "s", "M": "m"}, SILENCE, 1,
                                      reading="features")
    head, _ = load_phone_head(tmp_path / "encoder.pt")
    assert model.config.classes == 3
    for token, phone in (("<eps>", "<blk>"), (SILENCE, "<blk>"), ("S", "s"), ("M", "m")):
        row = int(model.token_map[TOKENS.index(token)].argmax())
        assert torch.allclose(model.output.weight[row], head.weight[UNIVERSAL.index(phone)], atol=1e-5)
        assert torch.allclose(model.output.bias[row], head.bias[UNIVERSAL.index(phone)], atol=1e-5)


def test_the_features_reading_needs_an_encoder_that_kept_them(tmp_path):
    _just_encoder(tmp_path / "encoder.pt")
    with pytest.raises(UsrasrError, match="keeps no articulatory part.*crosslingual_reading=neighbours"):
        crosslingual_ctc_model(tmp_path / "encoder.pt", TOKENS, project_phone_ipa(), SILENCE, reading="features")
    with pytest.raises(UsrasrError, match="by one of neighbours, features"):
        crosslingual_ctc_model(tmp_path / "encoder.pt", TOKENS, project_phone_ipa(), SILENCE, reading="nearest")


def test_expected_lengths_match_the_collapsed_lengths_of_every_label_sequence():
    """Brute force: every label sequence of a short utterance, its probability under independent
    frames, and its CTC length (repeats merged, blanks dropped)."""
    torch.manual_seed(0)
    lens = torch.tensor([4, 3])
    scores = torch.randn(2, 4, 3) * 2
    posteriors = scores.softmax(-1)
    expected = []
    for b, n in enumerate(lens.tolist()):
        total = 0.0
        for labels in itertools.product(range(3), repeat=n):
            probability = math.prod(posteriors[b, t, k].item() for t, k in enumerate(labels))
            total += probability * sum(1 for label, _ in itertools.groupby(labels) if label)
        expected.append(total)
    assert expected_lengths([(scores, lens)]) == pytest.approx(expected, rel=1e-5)
    certain = torch.full((1, 5, 3), -1e4)
    certain[0, torch.arange(5), torch.tensor([1, 1, 0, 1, 2])] = 0.0
    assert expected_lengths([(certain, torch.tensor([5]))]) == pytest.approx([3.0])  # the greedy count


def test_the_utterance_prior_divides_each_class_by_its_mean_over_the_utterance(tmp_path):
    _just_encoder(tmp_path / "encoder.pt")
    model, _ = crosslingual_ctc_model(tmp_path / "encoder.pt", TOKENS, project_phone_ipa(), SILENCE, 3)
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
        crosslingual_ctc_model(tmp_path / "encoder.pt", TOKENS, project_phone_ipa(), SILENCE)
    _just_encoder(tmp_path / "encoder.pt")
    with pytest.raises(UsrasrError, match="at least one universal phone"):
        crosslingual_ctc_model(tmp_path / "encoder.pt", TOKENS, project_phone_ipa(), SILENCE, 0)


def test_a_model_the_previous_version_saved_with_one_member_loads_and_one_of_several_is_refused(tmp_path):
    _just_encoder(tmp_path / "encoder.pt")
    model, _ = crosslingual_ctc_model(tmp_path / "encoder.pt", TOKENS, project_phone_ipa(), SILENCE, 3)
    save_model(tmp_path / "model.pt", model, TOKENS)
    checkpoint = torch.load(tmp_path / "model.pt")
    feats, lens = torch.randn(1, 30, 80), torch.tensor([30])
    with torch.no_grad():
        expected = model(feats, lens)[0]
    checkpoint["config"]["members"] = 1
    torch.save(checkpoint, tmp_path / "old.pt")
    with torch.no_grad():
        assert torch.allclose(load_model(tmp_path / "old.pt").model(feats, lens)[0], expected)
    checkpoint["config"]["members"] = 2
    torch.save(checkpoint, tmp_path / "several.pt")
    with pytest.raises(UsrasrError, match="does not match this version.*several networks"):
        load_model(tmp_path / "several.pt")
