"""Speech models and features the user brings (usrasr.models.pretrained): tiny random-weight
transformers models of each supported architecture, Kaldi ark/scp and .npy folders made here."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from lhotse import load_manifest

from usrasr.models.pretrained import TRANSFORMERS_MODELS, open_layer_source, stretch_frames
from usrasr.utils.errors import UsrasrError

transformers = pytest.importorskip("transformers")

SMALL = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, conv_dim=(16,) * 7,
             num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
CONFIGS = {"wav2vec2": "Wav2Vec2Config", "hubert": "HubertConfig", "wavlm": "WavLMConfig",
           "data2vec-audio": "Data2VecAudioConfig"}


def save_tiny_model(folder, model_type: str, preprocessor: dict | None = None, **overrides):
    """A random-weight model of ``model_type`` saved as a transformers model dir (``preprocessor``:
    its preprocessor_config.json, if any)."""
    torch.manual_seed(0)
    config = getattr(transformers, CONFIGS[model_type])(**{**SMALL, **overrides})
    getattr(transformers, TRANSFORMERS_MODELS[model_type])(config).save_pretrained(folder)
    if preprocessor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return folder


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("models")
    return {name: save_tiny_model(root / name, name) for name in CONFIGS}


@pytest.fixture(scope="module")
def test_cuts(tiny_corpus) -> list:
    return list(load_manifest(tiny_corpus / "manifests" / "cuts_test.jsonl.gz"))


def reference_layer(folder, model_type: str, cut, layer: int, normalize: bool = False) -> torch.Tensor:
    """The layer as transformers itself gives it: the whole model on one utterance's samples."""
    model = getattr(transformers, TRANSFORMERS_MODELS[model_type]).from_pretrained(folder).eval()
    samples = torch.from_numpy(cut.load_audio()).float().mean(0)
    if normalize:
        samples = (samples - samples.mean()) / torch.sqrt(samples.var(unbiased=False) + 1e-7)
    with torch.no_grad():
        return model(samples[None], output_hidden_states=True).hidden_states[layer][0]


@pytest.mark.parametrize("model_type", list(CONFIGS))
def test_every_architecture_gives_its_layers_at_its_own_frame_rate(tiny_models, test_cuts, model_type):
    source = open_layer_source(tiny_models[model_type])
    assert (source.num_layers, source.dim, source.frame_shift) == (4, 32, 0.02)  # 320 samples at 16 kHz
    layers = source.encode(test_cuts[:2], [0, 2, 3])
    for cut, got in zip(test_cuts[:2], layers[1]):
        torch.testing.assert_close(got, reference_layer(tiny_models[model_type], model_type, cut, 2))
        assert abs(len(got) * 0.02 - cut.duration) < 0.03
    # dropping the blocks above the layer read changes nothing in it
    low = open_layer_source(tiny_models[model_type], keep_layers=2).encode(test_cuts[:2], [1])[0]
    for got, full in zip(low, source.encode(test_cuts[:2], [1])[0]):
        torch.testing.assert_close(got, full)


def test_a_batch_with_an_attention_mask_gives_each_cut_its_own_features(tmp_path, test_cuts):
    folder = save_tiny_model(tmp_path / "m", "wav2vec2", {"sampling_rate": 16000, "do_normalize": True,
                                                          "return_attention_mask": True},
                             feat_extract_norm="layer", do_stable_layer_norm=True)
    batched = open_layer_source(folder, batch_seconds=60).encode(test_cuts, [2])[0]
    for cut, got in zip(test_cuts, batched):
        torch.testing.assert_close(got, reference_layer(folder, "wav2vec2", cut, 2, normalize=True),
                                   atol=2e-4, rtol=1e-3)


def test_a_model_at_another_sample_rate_gets_resampled_audio_and_says_so(tmp_path, test_cuts, caplog):
    folder = save_tiny_model(tmp_path / "m8k", "hubert", {"sampling_rate": 8000})
    source = open_layer_source(folder)
    assert source.frame_shift == pytest.approx(0.04)  # 320 samples at 8 kHz
    with caplog.at_level(logging.WARNING, logger="usrasr"):
        feats = source.encode(test_cuts[:1], [1])[0][0]
    assert "resampled to the model's 8000 Hz" in caplog.text
    assert abs(len(feats) * 0.04 - test_cuts[0].duration) < 0.05


def test_warped_layers_pair_frame_for_frame_with_the_plain_ones(tiny_models, test_cuts):
    source = open_layer_source(tiny_models["wavlm"])
    plain = source.encode(test_cuts[:2], [1, 3])
    warped = source.warped(test_cuts[:2], [1, 3])
    for p_layer, w_layer in zip(plain, warped):
        assert [len(f) for f in p_layer] == [len(f) for f in w_layer]
        assert not torch.allclose(p_layer[0], w_layer[0])
    x = torch.arange(5.0)[:, None]
    assert stretch_frames(x, 10)[:, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert stretch_frames(x, 3)[:, 0].tolist() == [0, 1, 3]


def write_kaldi(folder, cuts, dim: int = 5, shift: float = 0.01) -> dict:
    """A Kaldi ark/scp of random features at ``shift`` seconds per frame; the arrays by id."""
    kaldiio = pytest.importorskip("kaldiio")
    rng = np.random.default_rng(0)
    arrays = {cut.id: rng.normal(size=(int(cut.duration / shift), dim)).astype(np.float32) for cut in cuts}
    folder.mkdir(parents=True, exist_ok=True)
    with kaldiio.WriteHelper(f"ark,scp:{folder}/feats.ark,{folder}/feats.scp") as writer:
        for key, array in arrays.items():
            writer(key, array)
    return arrays


def write_npy(folder, cuts, dim: int = 6, shift: float = 0.02) -> dict:
    rng = np.random.default_rng(1)
    arrays = {cut.id: rng.normal(size=(int(cut.duration / shift), dim)).astype(np.float32) for cut in cuts}
    folder.mkdir(parents=True, exist_ok=True)
    for key, array in arrays.items():
        np.save(folder / f"{key}.npy", array)
    return arrays


@pytest.mark.parametrize("kind", ["scp", "kaldi_dir", "npy"])
def test_precomputed_features_are_read_by_id_with_the_frame_shift_of_their_duration(tmp_path, test_cuts, kind):
    if kind == "npy":
        arrays, path, shift = write_npy(tmp_path / "npy", test_cuts), tmp_path / "npy", 0.02
    else:
        arrays, shift = write_kaldi(tmp_path / "kaldi", test_cuts), 0.01
        path = tmp_path / "kaldi" / ("feats.scp" if kind == "scp" else "")
    source = open_layer_source(path)
    source.check_cuts(test_cuts, "test")
    assert source.num_layers == 1 and source.frame_shift == shift
    got = source.encode(list(reversed(test_cuts)), [0])[0]
    for cut, feats in zip(reversed(test_cuts), got):
        np.testing.assert_array_equal(feats.numpy(), arrays[cut.id])


def test_features_that_miss_cuts_name_the_missing_and_the_fix(tmp_path, test_cuts):
    write_npy(tmp_path / "npy", test_cuts[1:])
    with pytest.raises(UsrasrError, match=rf"no features for 1 of the 6 cuts of test \(first: {re.escape(test_cuts[0].id)}\)"
                                          r".*usrasr features"):
        open_layer_source(tmp_path / "npy").check_cuts(test_cuts, "test")


def test_features_of_mixed_dimensions_are_refused(tmp_path, test_cuts):
    write_npy(tmp_path / "npy", test_cuts[:1], dim=6)
    write_npy(tmp_path / "npy", test_cuts[1:2], dim=7)
    source = open_layer_source(tmp_path / "npy")
    with pytest.raises(UsrasrError, match="same dimension"):
        source.encode(test_cuts[:2], [0])


def test_bad_encoders_get_one_line_errors_that_name_the_fix(tmp_path, tiny_models):
    with pytest.raises(UsrasrError, match="encoder not found: .*transformers model dir"):
        open_layer_source(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsrasrError, match="not an encoder or features usrasr can read"):
        open_layer_source(tmp_path / "empty")
    transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path / "bert")
    with pytest.raises(UsrasrError, match="unknown architecture 'bert'.*supported: wav2vec2, hubert, wavlm"):
        open_layer_source(tmp_path / "bert")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(UsrasrError, match="not a readable transformers config"):
        open_layer_source(tmp_path / "broken")
    with pytest.raises(UsrasrError, match=r"layer 4 is out of range: .* has layers 0\.\.3; set unit_layer"):
        open_layer_source(tiny_models["wav2vec2"]).check_layer(4)
    (tmp_path / "bad.jsonl.gz").write_text("nothing")
    with pytest.raises(UsrasrError, match="not a readable Lhotse manifest"):
        open_layer_source(tmp_path / "bad.jsonl.gz")


def test_a_missing_optional_package_names_the_extra(tmp_path, tiny_models, test_cuts, monkeypatch):
    write_kaldi(tmp_path / "kaldi", test_cuts[:1])
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers raises ImportError
    monkeypatch.setitem(sys.modules, "kaldiio", None)
    with pytest.raises(UsrasrError, match=r"needs the optional package 'transformers': pip install 'usrasr\[encoders\]'"):
        open_layer_source(tiny_models["hubert"])
    with pytest.raises(UsrasrError, match=r"'kaldiio': pip install 'usrasr\[encoders\]'"):
        open_layer_source(tmp_path / "kaldi" / "feats.scp")


def test_the_base_install_imports_no_optional_package():
    code = ("import sys, usrasr.models.pretrained, usrasr.train.units.sources, usrasr.extract.features; "
            "print(sorted({'transformers', 'kaldiio'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
