"""The checkpoints of `usrasr pretrain` encoders, and what else a path may hold."""

import json

import pytest

from usrasr.models.encoder import (
    EncoderConfig,
    SslEncoder,
    ctc_model_from_encoder,
    save_encoder,
)
from usrasr.utils.errors import UsrasrError


def test_a_transformers_model_cannot_start_a_ctc_model_and_says_so(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "wav2vec2"}))
    with pytest.raises(UsrasrError, match="is a transformers model, not a `usrasr pretrain` encoder"):
        ctc_model_from_encoder(tmp_path, num_tokens=5)
    # a pretrain output that also holds a config.json is read as the encoder it is
    save_encoder(tmp_path / "encoder.pt", SslEncoder(EncoderConfig(hidden_dim=16, num_layers=1, num_heads=2)), {})
    assert ctc_model_from_encoder(tmp_path, num_tokens=5).output.out_features == 5
