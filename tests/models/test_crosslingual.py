import pytest
import torch
from torch import nn

from usrasr.lang.inventory import project_phone_ipa
from usrasr.lang.phones import SILENCE, SPOKEN_NOISE
from usrasr.lang.symbols import PHONE_TOKENS
from usrasr.models.crosslingual import NEVER, crosslingual_ctc_model
from usrasr.models.encoder import EncoderConfig, SslEncoder, save_encoder
from usrasr.utils.errors import UsrasrError

UNIVERSAL = ["<blk>", "s", "a", "i", "m", "t", "ʃ", "u", "o", "e", "n", "k"]


def _just_encoder(path, with_head=True):
    torch.manual_seed(0)
    encoder = SslEncoder(EncoderConfig(arch="tdnn", hidden_dim=16, num_layers=2, dropout=0.0))
    head = nn.Linear(16, len(UNIVERSAL))
    save_encoder(path, encoder, {"method": "just"}, *((head, UNIVERSAL) if with_head else ()))
    return encoder.eval(), head


def test_each_target_token_reads_the_row_of_its_nearest_universal_phone(tmp_path):
    encoder, head = _just_encoder(tmp_path / "encoder.pt")
    tokens = list(PHONE_TOKENS.symbols)
    model, mapping = crosslingual_ctc_model(tmp_path / "encoder.pt", tokens, project_phone_ipa(), SILENCE)
    assert (mapping["S"], mapping["SH"], mapping["IY"], mapping["M"], mapping[SILENCE]) == ("s", "ʃ", "i", "m", "<blk>")
    assert mapping[SPOKEN_NOISE] == ""

    feats = torch.randn(2, 37, 80)
    lens = torch.tensor([37, 30])
    with torch.no_grad():
        layers, out_lens = encoder(feats, lens)
        universal = head(layers[-1])  # the recogniser's own logits, computed independently
        rows = [0 if t in ("<eps>", SILENCE) else UNIVERSAL.index(mapping[t]) if mapping.get(t) else None
                for t in tokens]
        expected = torch.stack([universal[..., r] if r is not None else torch.full_like(universal[..., 0], NEVER)
                                for r in rows], dim=-1)
        got, got_lens = model(feats, lens)
    assert torch.equal(got_lens, out_lens)
    for b, n in enumerate(out_lens.tolist()):
        assert torch.allclose(got[b, :n], torch.log_softmax(expected[b, :n], dim=-1), atol=1e-5)
    assert got[..., tokens.index(SPOKEN_NOISE)].max() < -1000


def test_an_encoder_without_a_phone_head_is_refused(tmp_path):
    _just_encoder(tmp_path / "encoder.pt", with_head=False)
    with pytest.raises(UsrasrError, match="--method just"):
        crosslingual_ctc_model(tmp_path / "encoder.pt", list(PHONE_TOKENS.symbols), project_phone_ipa(), SILENCE)
