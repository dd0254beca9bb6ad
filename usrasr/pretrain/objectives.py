"""The objectives of ``usrasr pretrain``: BEST-RQ's and BiRQ's frozen random-projection
quantisers, their masked-prediction losses, the optional speaker adversary, and what
every method gives the one training loop (:class:`Objective`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from usrasr.models.acoustic import utterance_cmvn, valid_mask
from usrasr.models.encoder import SslEncoder, length_batches
from usrasr.utils.errors import UsrasrError


class RandomProjectionQuantizer(nn.Module):
    """BEST-RQ's quantiser: a frozen random projection, then the nearest of a
    frozen random codebook by cosine similarity.  Nothing here is trained."""

    def __init__(self, in_dim: int, codebook_size: int, codebook_dim: int, generator: torch.Generator):
        super().__init__()
        projection = torch.empty(in_dim, codebook_dim)
        bound = (6.0 / (in_dim + codebook_dim)) ** 0.5  # Xavier-uniform
        projection.uniform_(-bound, bound, generator=generator)
        self.register_buffer("projection", projection)
        self.register_buffer("codebook", F.normalize(torch.randn(codebook_size, codebook_dim, generator=generator), dim=-1))

    def similarities(self, x: Tensor) -> Tensor:
        """Cosine similarity of each projected frame to every code: (..., codebook_size)."""
        return F.normalize(x @ self.projection, dim=-1) @ self.codebook.t()

    def forward(self, x: Tensor) -> Tensor:
        return self.similarities(x).argmax(-1)


def stack_frames(feats: Tensor, feat_lens: Tensor, factor: int) -> Tensor:
    """Per-utterance normalised fbank, ``factor`` consecutive frames side by side: (B, ceil(T/factor), factor*F)."""
    feats = utterance_cmvn(feats, valid_mask(feat_lens, feats.shape[1]))
    pad = (-feats.shape[1]) % factor
    feats = F.pad(feats, (0, 0, 0, pad))
    return feats.reshape(feats.shape[0], feats.shape[1] // factor, factor * feats.shape[2])


def balancing_bias(logits: Tensor, iterations: int) -> Tensor:
    """A per-code bias ``b`` (V,) that evens out code usage over the rows of ``logits`` (N, V).

    Sinkhorn-Knopp on ``exp(logits)`` towards rows that sum to 1 and codes that each get
    N / V of the mass, in the log domain: the row scaling does not change any row's best
    code, so the column scaling ``b`` alone is kept, and ``argmax(logits + b)`` spreads the
    rows over the codes (SwAV's equipartition).  No gradient flows through ``b``.
    """
    scores = logits.detach().float()
    n, v = scores.shape
    bias = torch.zeros(v, device=scores.device)
    for _ in range(iterations):
        rows = torch.logsumexp(scores + bias, dim=1, keepdim=True)
        bias = math.log(n / v) - torch.logsumexp(scores - rows, dim=0)
    return bias.to(logits.dtype)


def perplexity(p: Tensor) -> Tensor:
    """exp(entropy) of a distribution: how many outcomes it spreads over."""
    return torch.exp(-(p * (p + 1e-9).log()).sum())


def span_mask(valid: Tensor, start_prob: float, span: int, generator: torch.Generator) -> Tensor:
    """Random spans of ``span`` frames, each valid frame starting one with ``start_prob``; (B, T') bool."""
    starts = (torch.rand(valid.shape, generator=generator) < start_prob).to(valid.device) & valid
    # a frame is masked when a span started within the previous ``span`` frames
    covered = F.max_pool1d(F.pad(starts.float().unsqueeze(1), (span - 1, 0)), span, stride=1).squeeze(1)
    return covered.bool() & valid


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``-scale`` (domain-adversarial training)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.scale * grad, None


def reverse_gradient(x: Tensor, scale: float = 1.0) -> Tensor:
    return _ReverseGradient.apply(x, scale)


@dataclass
class EnhancedLabels:
    """BiRQ's enhanced labels: a random-projection quantiser over the (unmasked) output of
    encoder layer ``layer``, the code selected by a straight-through Gumbel-softmax."""

    layer: int  # 1-based encoder layer
    weight: float = 1.0  # of the enhanced CE against the anchor CE
    temperature: float = 0.1  # cosine similarities / this = the selection's logits
    diversity_weight: float = 0.1  # wav2vec 2.0's diversity term on the generator's code distribution
    label_grad_scale: float = 0.0  # share of the enhanced loss's gradient that reaches the label generator
    balance_iterations: int = 3  # Sinkhorn-Knopp iterations evening out code usage per batch (0 = off)


@dataclass
class SpeakerAdversary:
    """A frame-level speaker classifier on one layer, trained through a reversed gradient, so
    that layer learns to hide which (pseudo-)speaker is talking."""

    num_speakers: int
    layer: int  # 1-based encoder layer
    weight: float


class PretrainModel(nn.Module):
    """Encoder + prediction heads + frozen quantisers; ``loss`` is one training step's objective."""

    def __init__(self, encoder: SslEncoder, codebook_size: int, codebook_dim: int, seed: int,
                 enhanced: EnhancedLabels | None = None, adversary: SpeakerAdversary | None = None):
        super().__init__()
        self.encoder = encoder
        c = encoder.config
        generator = torch.Generator().manual_seed(seed)
        self.anchor_quantizer = RandomProjectionQuantizer(c.subsampling * c.feat_dim, codebook_size, codebook_dim,
                                                          generator)
        self.anchor_head = nn.Linear(c.hidden_dim, codebook_size)
        self.enhanced = enhanced
        if enhanced is not None:
            self.enhanced_quantizer = RandomProjectionQuantizer(c.hidden_dim, codebook_size, codebook_dim, generator)
            self.enhanced_head = nn.Linear(c.hidden_dim, codebook_size)
        self.adversary = adversary
        if adversary is not None:
            self.speaker_head = nn.Linear(c.hidden_dim, adversary.num_speakers)

    def anchor_loss(self, feats: Tensor, feat_lens: Tensor, hidden: Tensor, masked: Tensor,
                    parts: dict[str, float]) -> Tensor:
        """BEST-RQ's cross-entropy (nats per masked frame) of the last layer's ``hidden`` (B, T', C)
        on the ``masked`` frames against the frozen quantiser's codes of the input there."""
        with torch.no_grad():
            anchor = self.anchor_quantizer(stack_frames(feats, feat_lens, self.encoder.config.subsampling))[masked]
        anchor_logits = self.anchor_head(hidden[masked])
        anchor_loss = F.cross_entropy(anchor_logits, anchor)
        parts.update(anchor_loss=anchor_loss.item(),
                     anchor_accuracy=(anchor_logits.argmax(-1) == anchor).float().mean().item())
        return anchor_loss

    def loss(self, feats: Tensor, feat_lens: Tensor, masked: Tensor, enhanced: bool = False,
             speakers: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        """Masked-prediction cross-entropy (nats per masked frame) and its parts; ``enhanced``
        adds BiRQ's enhanced labels; with a speaker adversary, ``speakers`` (B,) are the
        utterances' (pseudo-)speaker indices."""
        x, _, valid = self.encoder.front_end(feats, feat_lens)
        masked = masked & valid
        outputs = self.encoder.run_layers(x, valid, masked)
        parts: dict[str, float] = {}
        loss = self.anchor_loss(feats, feat_lens, outputs[-1], masked, parts)
        if self.adversary is not None:
            loss = loss + self._speaker_loss(outputs[self.adversary.layer - 1], valid, masked, speakers, parts)
        if enhanced:
            loss = loss + self._enhanced_loss(x, valid, masked, outputs[-1][masked], parts)
        return loss, parts

    def _enhanced_loss(self, x: Tensor, valid: Tensor, masked: Tensor, hidden: Tensor,
                       parts: dict[str, float]) -> Tensor:
        # BiRQ: the enhanced labels come from the model's own (unmasked) lower layers; with
        # label_grad_scale > 0 the straight-through Gumbel-softmax lets the prediction loss
        # reach those layers through the labels too (the first-order bilevel step).
        e = self.enhanced
        teacher = self.encoder.run_layers(x, valid, num_layers=e.layer)[-1]
        # Per-utterance mean/variance normalisation, as BEST-RQ does to its input: without it
        # the component every frame shares dominates the projection and all frames fall
        # on a few codes (see docs/results/2026-12-03-birq-label-collapse-guards.md).
        teacher = utterance_cmvn(teacher, valid)
        code_logits = self.enhanced_quantizer.similarities(teacher) / e.temperature
        # Even out the codes chosen in this batch: the generator drifts towards codes that are
        # easy to predict, and the diversity term alone is too weak to stop it.
        bias = balancing_bias(code_logits[valid], e.balance_iterations) if e.balance_iterations else 0.0
        soft = F.gumbel_softmax(code_logits[masked] + bias, tau=1.0)
        hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
        # straight-through: the value is the hard label, the gradient the soft one's, scaled:
        # the full gradient collapses the labels onto a few codes, and even a share of it
        # makes the generator's layers trade phone information for predictable labels
        targets = hard + e.label_grad_scale * (soft - soft.detach())
        enhanced_logits = self.enhanced_head(hidden)
        enhanced_loss = -(targets * enhanced_logits.log_softmax(-1)).sum(-1).mean()
        # wav2vec 2.0's diversity term: 1 - perplexity / V of the generator's average code distribution
        average = code_logits[valid].softmax(-1).mean(0)
        code_perplexity = perplexity(average)
        diversity = 1.0 - code_perplexity / average.numel()
        parts.update(enhanced_loss=enhanced_loss.item(), code_perplexity=code_perplexity.item(),
                     label_perplexity=perplexity(hard.detach().mean(0)).item(),
                     enhanced_accuracy=(enhanced_logits.argmax(-1) == targets.argmax(-1)).float().mean().item())
        return e.weight * enhanced_loss + e.diversity_weight * diversity

    def _speaker_loss(self, layer: Tensor, valid: Tensor, masked: Tensor, speakers: Tensor | None,
                      parts: dict[str, float]) -> Tensor:
        if speakers is None:
            raise UsrasrError("a speaker adversary needs the utterances' speaker indices")
        # The classifier sees what k-means will see (per-utterance normalised frames), and only
        # unmasked frames, which carry the input's voice.  The head descends the CE; the
        # reversed gradient makes the encoder ascend it.
        frames = utterance_cmvn(layer, valid)[valid & ~masked]
        targets = speakers[:, None].expand_as(valid)[valid & ~masked]
        logits = self.speaker_head(reverse_gradient(frames, self.adversary.weight))
        speaker_loss = F.cross_entropy(logits, targets)
        parts.update(speaker_loss=speaker_loss.item(),
                     speaker_accuracy=(logits.argmax(-1) == targets).float().mean().item())
        return speaker_loss


def subsampled_valid(feat_lens: Tensor, subsampling: int) -> Tensor:
    """(B, T') validity of the encoder's output frames: the front end gives ceil(T / subsampling)."""
    out_lens = (feat_lens + subsampling - 1) // subsampling
    return valid_mask(out_lens, int(out_lens.max()))


def padded(feats: list[Tensor], batch: list[int], device: torch.device) -> tuple[Tensor, Tensor]:
    """Utterances ``batch`` of ``feats`` as one zero-padded (B, T, F) tensor and their lengths."""
    return (pad_sequence([feats[i] for i in batch], batch_first=True).to(device),
            torch.tensor([len(feats[i]) for i in batch], device=device))


class BatchOrder:
    """Length-sorted batches of one set of utterances, drawn in a fresh random order every
    epoch; ``queue`` (the batches left in this epoch) is what a resumed run needs."""

    def __init__(self, lengths: list[int], max_frames: int):
        self.batches = length_batches(lengths, max_frames)
        self.queue: list[int] = []

    def next(self, generator: torch.Generator) -> list[int]:
        if not self.queue:
            self.queue = torch.randperm(len(self.batches), generator=generator).tolist()
        return self.batches[self.queue.pop()]


class Step(NamedTuple):
    loss: Tensor
    parts: dict[str, float]  # the loss's parts and accuracies, for metrics.jsonl
    series: str  # the curve in losses.png this step belongs to


class Objective:
    """What one pretraining method gives the training loop: its model (all trained weights), one
    step's loss, the state a resumed run needs beyond the loop's own, and the finished encoder."""

    model: nn.Module
    orders: dict[str, BatchOrder]  # their queues are saved with every checkpoint

    def step(self, step: int, generator: torch.Generator, device: torch.device) -> Step:
        raise NotImplementedError

    def status(self, parts: dict[str, float]) -> str:
        """A few numbers for the progress bar."""
        raise NotImplementedError

    def finish(self, out: Path, step: int, device: torch.device) -> dict:
        """Write ``out/encoder.pt``; return what the summary adds."""
        raise NotImplementedError
