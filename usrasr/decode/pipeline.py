"""Model + graph search: utterances in, hypotheses out, one bad input costing only itself."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from usrasr.corpus.features import FRAME_SHIFT
from usrasr.decode.audio import BadInput, Utterance, load_features
from usrasr.decode.search import GraphSearch, Hypothesis, SearchOptions, Unit
from usrasr.graph.hlg import Lang, ensure_graph, load_graph, read_lang
from usrasr.models.acoustic import CtcAcousticModel, LoadedModel
from usrasr.utils.errors import UsrasrError
from usrasr.corpus.layout import CorpusLayout


def resolve_lang_dir(model_path: Path | None, loaded: LoadedModel | None, option: Path | None) -> Path:
    """``--lang``, else the lang dir recorded in the model, else ``lang/`` beside it or its own dir."""
    if option is not None:
        return option
    candidates = []
    if loaded is not None and loaded.lang_dir is not None:
        candidates.append(loaded.lang_dir)
    if model_path is not None:
        candidates += [model_path.parent / "lang", model_path.parent]
    for candidate in candidates:
        if (candidate / "tokens.txt").is_file():
            return candidate
    raise UsrasrError("no lang dir recorded in the model or found beside it; pass --lang DIR")


def default_lm(lang_dir: Path, unit: Unit, missing_ok: bool = False) -> Path | None:
    """The LM prepare wrote for ``unit`` into ``<corpus>/lm/``, next to ``<corpus>/<lang>``."""
    return CorpusLayout(lang_dir.parent).lm(unit, missing_ok)


def check_tokens(loaded: LoadedModel, lang: Lang) -> None:
    if loaded.tokens != lang.model_tokens:
        raise UsrasrError(
            f"the model's {len(loaded.tokens)} tokens differ from the {lang.num_model_tokens} "
            f"of {lang.directory}/tokens.txt; use the lang dir the model was trained with"
        )


@dataclass
class Decoded:
    """The outcome for one utterance: a hypothesis, or why there is none."""

    utterance: Utterance
    hypothesis: Hypothesis | None = None
    error: str | None = None
    num_frames: int = 0  # feature frames (10 ms each)

    @property
    def duration(self) -> float:
        return self.num_frames * FRAME_SHIFT


class Recognizer:
    """Features -> batched network forward -> per-utterance graph search (always on CPU)."""

    def __init__(self, model: CtcAcousticModel, search: GraphSearch, device: torch.device):
        self.model = model.to(device).eval()
        self.search = search
        self.device = device

    @torch.inference_mode()
    def log_probs(self, feats: list[torch.Tensor]) -> list[np.ndarray]:
        """One padded forward pass; returns each utterance's ``(T', V)`` log-posteriors."""
        lengths = torch.tensor([len(f) for f in feats], device=self.device)
        batch = pad_sequence(feats, batch_first=True).to(self.device)
        log_probs, out_lens = self.model(batch, lengths)
        log_probs = log_probs.float().cpu().numpy()
        return [log_probs[i, : int(n)] for i, n in enumerate(out_lens.cpu())]

    def decode(self, utterances: Iterable[Utterance], batch_size: int = 8) -> Iterator[Decoded]:
        """Yield one :class:`Decoded` per utterance, in input order, as each search finishes."""
        pending: list[Utterance] = []
        for utterance in utterances:
            pending.append(utterance)
            if len(pending) == batch_size:
                yield from self._decode_batch(pending)
                pending = []
        if pending:
            yield from self._decode_batch(pending)

    def _decode_batch(self, utterances: list[Utterance]) -> Iterator[Decoded]:
        results: list[Decoded] = []
        feats: list[torch.Tensor] = []
        for utterance in utterances:
            try:
                f = load_features(utterance)
                feats.append(f)
                results.append(Decoded(utterance, num_frames=len(f)))
            except BadInput as e:
                results.append(Decoded(utterance, error=str(e)))
        posteriors = iter(self.log_probs(feats) if feats else [])
        for result in results:
            if result.error is None:
                result.hypothesis = self.search.search(next(posteriors))
            yield result


def build_recognizer(
    loaded: LoadedModel,
    lang_dir: Path,
    unit: Unit,
    lm: Path | None,
    graph_dir: Path | None,
    options: SearchOptions,
    device: torch.device,
    force: bool = False,
) -> Recognizer:
    """Check the model against the lang dir, get (or compile) the graph, and wire it up."""
    lang = read_lang(lang_dir)
    check_tokens(loaded, lang)
    graph = load_graph(ensure_graph("HLG" if unit == "word" else "HP", lang, lm, graph_dir, force))
    search = GraphSearch(graph, lang, unit, options, seconds_per_frame=FRAME_SHIFT * loaded.model.subsampling)
    return Recognizer(loaded.model, search, device)
