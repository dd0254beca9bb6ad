"""The objectives of ``usrasr pretrain``: BEST-RQ's and BiRQ's frozen random-projection
quantisers, their masked-prediction losses, the optional speaker adversary, the batches
(Lhotse's dynamic bucketing sampler) and each process's share of them, and what every
method gives the one training loop (:class:`Objective`)."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from usrasr.corpus.features import FRAME_SHIFT
from usrasr.models.acoustic import utterance_cmvn, valid_mask
from usrasr.models.encoder import SslEncoder
from usrasr.utils.distributed import process_rank, shard, world_size
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
        """Cosine similarity of each projected frame to every code: (..., codebook_size), in float32
        under autocast too: a bf16 projection would move frames near a boundary to another code."""
        with torch.autocast(x.device.type, enabled=False):
            return F.normalize(x.float() @ self.projection, dim=-1) @ self.codebook.t()

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
                    parts: dict[str, float], masked_frames: float | None = None) -> Tensor:
        """BEST-RQ's cross-entropy (nats per masked frame) of the last layer's ``hidden`` (B, T', C)
        on the ``masked`` frames against the frozen quantiser's codes of the input there.
        ``masked_frames`` is what the sum over the frames is divided by (default: their number)."""
        with torch.no_grad():
            anchor = self.anchor_quantizer(stack_frames(feats, feat_lens, self.encoder.config.subsampling))[masked]
        anchor_logits = self.anchor_head(hidden[masked]).float()
        count = max(int(masked.sum()) if masked_frames is None else masked_frames, 1)
        anchor_loss = F.cross_entropy(anchor_logits, anchor, reduction="sum") / count
        parts.update(anchor_loss=anchor_loss.item(),
                     anchor_accuracy=(anchor_logits.argmax(-1) == anchor).sum().item() / count)
        return anchor_loss

    def loss(self, feats: Tensor, feat_lens: Tensor, masked: Tensor, enhanced: bool = False,
             speakers: Tensor | None = None, masked_frames: float | None = None) -> tuple[Tensor, dict[str, float]]:
        """Masked-prediction cross-entropy (nats per masked frame) and its parts; ``enhanced``
        adds BiRQ's enhanced labels; with a speaker adversary, ``speakers`` (B,) are the
        utterances' (pseudo-)speaker indices.  ``masked_frames``: the masked-frame means'
        divisor (default: this batch's masked frames; see :class:`Share`)."""
        x, _, valid = self.encoder.front_end(feats, feat_lens)
        masked = masked & valid
        outputs = self.encoder.run_layers(x, valid, masked)
        parts: dict[str, float] = {}
        if masked_frames is None:
            masked_frames = int(masked.sum())
        loss = self.anchor_loss(feats, feat_lens, outputs[-1], masked, parts, masked_frames)
        if self.adversary is not None:
            loss = loss + self._speaker_loss(outputs[self.adversary.layer - 1], valid, masked, speakers, parts)
        if enhanced:
            loss = loss + self._enhanced_loss(x, valid, masked, outputs[-1][masked], parts, masked_frames)
        return loss, parts

    forward = loss  # DistributedDataParallel runs a module through its forward

    def _enhanced_loss(self, x: Tensor, valid: Tensor, masked: Tensor, hidden: Tensor,
                       parts: dict[str, float], masked_frames: float) -> Tensor:
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
        enhanced_logits = self.enhanced_head(hidden).float()
        enhanced_loss = -(targets * enhanced_logits.log_softmax(-1)).sum() / max(masked_frames, 1)
        # wav2vec 2.0's diversity term: 1 - perplexity / V of the generator's average code distribution
        average = code_logits[valid].softmax(-1).mean(0)
        code_perplexity = perplexity(average)
        diversity = 1.0 - code_perplexity / average.numel()
        parts.update(enhanced_loss=enhanced_loss.item(), code_perplexity=code_perplexity.item(),
                     label_perplexity=perplexity(hard.detach().mean(0)).item(),
                     enhanced_accuracy=(enhanced_logits.argmax(-1) == targets.argmax(-1)).sum().item()
                     / max(masked_frames, 1))
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
        logits = self.speaker_head(reverse_gradient(frames, self.adversary.weight)).float()
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


# twice Lhotse's default: on the default corpus, half the padding and batches still near full
# (docs/results/2026-12-07-pretrain-scale-cpu.md); fewer for fewer utterances
BUCKETS = 20


def _listed(index: dict[str, int], cut) -> bool:
    return cut.id in index


class BucketedBatches:
    """Batches of one set of utterances from Lhotse's ``DynamicBucketingSampler`` over their cut
    manifest: utterances of similar duration together (little padding), ``max_frames`` input
    frames of audio a batch (its ``max_duration``, padding not counted), buckets and utterances
    shuffled by ``seed``, afresh every epoch.  A batch is the utterances' positions in ``ids``
    (whose features the objective holds).  Every process draws the same batches (a sampler of
    world size 1 each, the batch then shared out by :class:`Share`), so they do not depend on the
    number of processes; ``state_dict`` (the epoch and the batches drawn in it) resumes exactly."""

    def __init__(self, manifest: Path, ids: list[str], max_frames: int, seed: int):
        from lhotse import load_manifest_lazy
        from lhotse.dataset import DynamicBucketingSampler

        self.index = {cut_id: i for i, cut_id in enumerate(ids)}
        # read lazily, as the sampler is meant to stream a manifest; utterances the objective left out
        # (a multilingual corpus's other languages, say) are left out here too
        cuts = load_manifest_lazy(manifest).filter(partial(_listed, self.index))
        self.sampler = DynamicBucketingSampler(cuts, max_duration=max_frames * FRAME_SHIFT, shuffle=True, seed=seed,
                                               num_buckets=min(BUCKETS, len(ids)), world_size=1, rank=0)
        iter(self.sampler)

    def next(self) -> list[int]:
        try:
            cuts = next(self.sampler)
        except StopIteration:  # the epoch is over: the next one, in a fresh order
            self.sampler.set_epoch(self.sampler.epoch + 1)
            iter(self.sampler)
            cuts = next(self.sampler)
        return [self.index[cut.id] for cut in cuts]

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(copy.deepcopy(state))  # Lhotse empties the dict it loads
        iter(self.sampler)


@dataclass
class Share:
    """This process's share of a global batch (all of it with one process).

    Every process draws the same batch and masks; process ``rank`` of ``world`` takes every
    ``world``-th utterance.  A part of the loss that is a mean over the batch's masked frames
    (or utterances) is taken on each process as its sum over the share divided by the
    batch's count over the processes (``masked_frames``, ``utterances``): DDP averages the
    processes' gradients, and that average is then the gradient of the whole batch's mean, as
    one process computes it.  BiRQ's code balancing and diversity term and the speaker
    adversary are means over each share.  A batch with fewer utterances than processes leaves
    some without one: they take a copy of one whose loss counts zero (``weight`` 0), so
    that every process still runs the forward and backward passes DDP waits for."""

    rows: list[int]  # positions in the global batch
    masked_frames: float
    utterances: float
    weight: float

    @classmethod
    def of(cls, batch: list[int], masked: Tensor | None) -> Share:
        """Process ``process_rank()``'s share of ``batch`` whose (B, T') ``masked`` frames are drawn."""
        rank, world = process_rank(), world_size()
        rows = shard(range(len(batch)), rank, world)
        weight = 1.0 if rows else 0.0
        frames = 0.0 if masked is None else int(masked.sum()) / world
        return cls(rows or [rank % len(batch)], frames, len(batch) / world, weight)

    def utterances_of(self, batch: list[int]) -> list[int]:
        return [batch[row] for row in self.rows]

    def mask(self, masked: Tensor, lens: Tensor, subsampling: int, device: torch.device) -> Tensor:
        """The share's rows of the batch's ``masked``, cut to its own longest output (``lens``: its input lengths)."""
        frames = int((lens.max() + subsampling - 1) // subsampling)
        return masked[self.rows, :frames].to(device)

    def weighted(self, step: Step) -> Step:
        if self.weight == 1.0:
            return step
        return Step(step.loss * self.weight, {k: v * self.weight for k, v in step.parts.items()}, step.series)


class Step(NamedTuple):
    loss: Tensor
    parts: dict[str, float]  # the loss's parts and accuracies, for metrics.jsonl
    series: str  # the curve in losses.png this step belongs to


class Objective:
    """What one pretraining method gives the training loop: its model (all trained weights), one
    step's loss, the state a resumed run needs beyond the loop's own, and the finished encoder."""

    model: nn.Module
    batches: dict[str, BucketedBatches]  # their samplers' states are saved with every checkpoint

    def step(self, step: int, generator: torch.Generator, network: nn.Module, device: torch.device) -> Step:
        """This process's share of step ``step``'s loss (see :class:`Share`), computed by ``network``
        (``model``, or its DDP wrapper); masks are drawn from ``generator``."""
        raise NotImplementedError

    def status(self, parts: dict[str, float]) -> str:
        """A few numbers for the progress bar."""
        raise NotImplementedError

    def finish(self, out: Path, step: int, device: torch.device) -> dict:
        """Write ``out/encoder.pt``; return what the summary adds."""
        raise NotImplementedError
