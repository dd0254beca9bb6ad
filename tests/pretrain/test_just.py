"""`usrasr pretrain --method just`: the TDNN encoder, its checkpoint with the phone CTC head,
the joint objective, training, resume and the no-leak rule."""

import pytest
import torch
from torch import nn

from usrasr.models.encoder import (
    EncoderConfig, SslEncoder, ctc_model_from_encoder, load_encoder, load_phone_head, save_encoder,
)
from usrasr.utils.errors import UsrasrError

PHONES = ["<blk>", "a", "i", "p", "t", "ʃ"]


def _tdnn(**kw):
    torch.manual_seed(0)
    return SslEncoder(EncoderConfig(arch="tdnn", hidden_dim=16, num_layers=3, dropout=0.0, **kw))


def test_checkpoint_keeps_the_phone_head_and_its_symbols(tmp_path):
    encoder, head = _tdnn(), nn.Linear(16, len(PHONES))
    save_encoder(tmp_path / "encoder.pt", encoder, {"method": "just"}, phone_head=head, phones=PHONES)
    loaded_head, phones = load_phone_head(tmp_path)
    assert phones == PHONES and isinstance(loaded_head, nn.Linear)
    assert torch.equal(loaded_head.weight, head.weight) and torch.equal(loaded_head.bias, head.bias)
    loaded, info = load_encoder(tmp_path / "encoder.pt")
    assert info["method"] == "just" and loaded.config.arch == "tdnn"
    for name, value in encoder.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    save_encoder(tmp_path / "plain.pt", encoder, {"method": "bestrq"})
    assert load_phone_head(tmp_path / "plain.pt") is None


def test_checkpoint_refuses_a_head_that_does_not_fit(tmp_path):
    with pytest.raises(UsrasrError, match="phone head maps"):
        save_encoder(tmp_path / "e.pt", _tdnn(), {}, phone_head=nn.Linear(16, 4), phones=PHONES)
    with pytest.raises(UsrasrError, match="phone symbols"):
        save_encoder(tmp_path / "e.pt", _tdnn(), {}, phone_head=nn.Linear(16, len(PHONES)))
    with pytest.raises(UsrasrError, match="unknown encoder arch"):
        EncoderConfig(arch="lstm")


def test_tdnn_encoder_gives_every_layer_and_ignores_padding():
    encoder = _tdnn().eval()
    feats = torch.randn(2, 50, 80)
    outputs, lengths = encoder(feats, torch.tensor([50, 31]))
    assert len(outputs) == 4 and lengths.tolist() == [25, 16]
    assert all(o.shape == (2, 25, 16) for o in outputs)
    alone, _ = encoder(feats[1:, :31], torch.tensor([31]))
    for batched, single in zip(outputs, alone):
        torch.testing.assert_close(batched[1, :16], single[0])
        assert not batched[1, 16:].any()  # padding stays zero


def test_ctc_model_from_a_tdnn_encoder_computes_its_last_layer(tmp_path):
    encoder = _tdnn()
    save_encoder(tmp_path / "encoder.pt", encoder, {"method": "just"})
    model = ctc_model_from_encoder(tmp_path, num_tokens=len(PHONES)).eval()
    assert model.config.arch == "tdnn"
    feats, lens = torch.randn(1, 40, 80), torch.tensor([40])
    last = load_encoder(tmp_path)[0](feats, lens)[0][-1]
    log_probs, _ = model(feats, lens)
    torch.testing.assert_close(log_probs, model.output(last).log_softmax(-1))
