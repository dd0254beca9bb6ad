"""CTC models on the waveform (usrasr.models.waveform_ctc): started from tiny random-weight
transformers models of each supported architecture, saved self-contained, read by decode."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from lhotse import load_manifest

from tests.models.test_pretrained import CONFIGS, save_tiny_model, tiny_models  # noqa: F401 (a fixture)
from usrasr.decode.audio import SECONDS_PER_ROW, Utterance, load_input_and_rate
from usrasr.models.acoustic import load_model, save_model
from usrasr.models.waveform_ctc import ctc_model_from_pretrained, ctc_model_from_transformers
from usrasr.utils.errors import UsrasrError

transformers = pytest.importorskip("transformers")

TOKENS = ["<eps>", "AA", "B", "K", "S"]


@pytest.fixture(scope="module")
def test_cuts(tiny_corpus) -> list:
    return list(load_manifest(tiny_corpus / "manifests" / "cuts_test.jsonl.gz"))


def batch_of(waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.nn.utils.rnn.pad_sequence(waves, batch_first=True), torch.tensor([len(w) for w in waves])


@pytest.mark.parametrize("model_type", list(CONFIGS))
def test_every_architecture_starts_a_ctc_model_that_saves_self_contained(tiny_models, test_cuts, tmp_path,
                                                                          model_type):
    model = ctc_model_from_pretrained(tiny_models[model_type], len(TOKENS))
    assert model.input == "waveform" and model.frame_shift == 0.02  # 320 samples at 16 kHz, from the model
    # the encoder starts as the transformers model's: its layers read as it reads them
    reference = getattr(transformers, CONFIGS[model_type].replace("Config", "Model")).from_pretrained(
        tiny_models[model_type]).eval()
    for name, weight in reference.state_dict().items():
        torch.testing.assert_close(model.encoder.state_dict()[name], weight)
    # fine-tuned whole but for the frozen convolutional feature encoder
    assert not any(p.requires_grad for p in model.encoder.feature_extractor.parameters())
    assert all(p.requires_grad for p in model.encoder.encoder.parameters())
    waves = [load_input_and_rate(Utterance(c.id, cut=c), "waveform")[0] for c in test_cuts[:3]]
    model.eval()
    with torch.no_grad():
        log_probs, out_lens = model(*batch_of(waves))
    for wave, n in zip(waves, out_lens):
        assert abs(int(n) * 0.02 - len(wave) / 16000) < 0.03
    save_model(tmp_path / "model.pt", model, TOKENS)
    (tmp_path / "gone").mkdir()
    tiny_models[model_type].rename(tmp_path / "gone" / "dir")  # decode needs neither the dir nor a network
    try:
        loaded = load_model(tmp_path / "model.pt")
    finally:
        (tmp_path / "gone" / "dir").rename(tiny_models[model_type])
    assert loaded.tokens == TOKENS and loaded.model.input == "waveform"
    with torch.no_grad():
        again, again_lens = loaded.model(*batch_of(waves))
        alone, _ = loaded.model(*batch_of(waves[1:2]))
    assert torch.equal(again, log_probs) and torch.equal(again_lens, out_lens)
    # a batch gives each utterance what it gets alone (group-norm encoders: one at a time)
    torch.testing.assert_close(alone[0], again[1, : out_lens[1]], atol=1e-5, rtol=1e-4)


def test_a_layer_norm_encoder_reads_its_attention_mask_and_normalises_each_utterance(tmp_path, test_cuts):
    folder = save_tiny_model(tmp_path / "m", "wav2vec2", {"sampling_rate": 16000, "do_normalize": True,
                                                          "return_attention_mask": True},
                             feat_extract_norm="layer", do_stable_layer_norm=True)
    model = ctc_model_from_transformers(folder, len(TOKENS), layer=2).eval()
    assert model.config.reads_attention_mask and model.config.normalize
    assert len(model.encoder.encoder.layers) == 2 and model.config.encoder["num_hidden_layers"] == 2
    waves = [load_input_and_rate(Utterance(c.id, cut=c), "waveform")[0] for c in test_cuts[:3]]
    with torch.no_grad():
        batched, lengths = model(*batch_of(waves))
        scaled, _ = model(*batch_of([w * 3 for w in waves[1:2]]))  # normalised: the gain does not matter
    torch.testing.assert_close(scaled[0], batched[1, : lengths[1]], atol=2e-4, rtol=1e-3)


def test_a_training_step_moves_the_encoder_but_not_its_feature_encoder(tiny_models, test_cuts):
    from usrasr.models.ctc_train import train_ctc

    model = ctc_model_from_transformers(tiny_models["hubert"], len(TOKENS))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    waves = [load_input_and_rate(Utterance(c.id, cut=c), "waveform")[0] for c in test_cuts[:2]]
    train_ctc(model, waves, [[1, 2, 3], [4, 1]], steps=2, lr=1e-3, batch_size=2)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("encoder.encoder.") for k in changed) and "output.weight" in changed
    assert not any(k.startswith("encoder.feature_extractor.") for k in changed)


def test_too_short_audio_gets_no_frame_instead_of_a_crash(tiny_models):
    model = ctc_model_from_transformers(tiny_models["wavlm"], len(TOKENS)).eval()
    with torch.no_grad():
        log_probs, out_lens = model(torch.zeros(1, 100), torch.tensor([100]))
    assert out_lens.tolist() == [0]


def test_the_waveform_is_what_decode_reads_for_such_a_model(tiny_corpus, test_cuts):
    cut = test_cuts[0]
    from_cut, rate = load_input_and_rate(Utterance(cut.id, cut=cut), "waveform")
    from_file, _ = load_input_and_rate(Utterance(cut.id, Path(cut.recording.sources[0].source)), "waveform")
    assert rate == 16000 and from_cut.ndim == 1 and torch.equal(from_cut, from_file)
    assert len(from_cut) * SECONDS_PER_ROW["waveform"] == pytest.approx(cut.duration, abs=1e-3)
    fbank, _ = load_input_and_rate(Utterance(cut.id, cut=cut), "fbank")
    assert fbank.shape[1] == 80 and len(fbank) * SECONDS_PER_ROW["fbank"] == pytest.approx(cut.duration, abs=0.03)


def refused(match: str, path, **kwargs) -> None:
    with pytest.raises(UsrasrError, match=match) as error:
        ctc_model_from_pretrained(path, len(TOKENS), **kwargs) if not kwargs else \
            ctc_model_from_transformers(path, len(TOKENS), **kwargs)
    assert "\n" not in str(error.value)


def test_bad_starts_get_one_line_errors(tmp_path, tiny_models):
    refused(r"layer 4 is out of range: .* has layers 0\.\.3; set ctc_init_layer", tiny_models["wav2vec2"], layer=4)
    transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path / "bert")
    refused("unknown architecture 'bert'.*supported: wav2vec2, hubert, wavlm", tmp_path / "bert")
    refused("encoder not found", tmp_path / "nowhere")
    refused("reads 8000 Hz audio; .*start from a 16 kHz model",
            save_tiny_model(tmp_path / "m8k", "hubert", {"sampling_rate": 8000}))


def test_decoding_such_a_model_without_transformers_names_the_extra(tiny_models, tmp_path, monkeypatch):
    save_model(tmp_path / "model.pt", ctc_model_from_transformers(tiny_models["hubert"], len(TOKENS)), TOKENS)
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers raises ImportError
    with pytest.raises(UsrasrError, match=r"needs the optional package 'transformers': pip install 'usrasr\[encoders\]'"):
        load_model(tmp_path / "model.pt")
