"""``usrasr pretrain`` configuration (YAML + ``--set key=value``)."""

from __future__ import annotations

from dataclasses import dataclass

from usrasr.utils.config import YamlConfig
from usrasr.utils.device import check_precision
from usrasr.utils.errors import UsrasrError

METHODS = ("bestrq", "birq", "just")
ARCHITECTURES = ("auto", "conformer", "tdnn")


@dataclass
class PretrainConfig(YamlConfig):
    # "bestrq": input-level labels only; "birq": + enhanced labels from a layer; "just": CTC over the
    # universal phones of a labelled multilingual corpus + just_weight x BEST-RQ on all audio.  BEST-RQ is the
    # default: compared at equal compute, see docs/results/2026-12-03-units-birq-balanced-equal-compute.md.
    method: str = "bestrq"
    # encoder layers: "conformer", "tdnn" (dilated 1-D convolutions, quick on a CPU), or "auto": tdnn for
    # just on a CPU, conformer otherwise (scale hidden_dim / num_layers up on a GPU)
    arch: str = "auto"
    hidden_dim: int = 192
    num_layers: int = 4
    num_heads: int = 4
    conv_kernel_size: int = 15
    ff_multiplier: int = 4
    subsampling: int = 2  # 20 ms frames: TTS phones last 50-100 ms, 40 ms frames would merge them
    dropout: float = 0.1
    kernel_size: int = 3  # tdnn: kernel of every layer (dilations cycle through 1, 2, 3)
    # just: the labelled multilingual corpus (`usrasr prepare multilingual --out DIR`); required for just
    multilingual: str = ""
    just_weight: float = 1.0  # lambda, the weight of BEST-RQ's masked prediction (0 = phone CTC alone)
    languages: str = ""  # just: comma-separated languages of the multilingual corpus to train on ("" = all)
    engines: str = ""  # just: comma-separated synthesis engines to train on ("" = all)
    # just: share of the steps that take a batch of the target corpus's train-audio (masked prediction
    # alone); the others take a labelled batch (phone CTC + just_weight x masked prediction in one pass).
    # 0.3: about 3 target batches per 7 labelled ones.  No target batches when just_weight is 0.
    target_share: float = 0.3
    # masking: each frame starts a masked span with this probability
    mask_prob: float = 0.05
    mask_span: int = 5
    # random-projection quantisers (frozen)
    codebook_size: int = 256
    codebook_dim: int = 16
    # BiRQ: enhanced labels from this encoder layer (1-based), selected by Gumbel-softmax
    birq_layer: int = 2
    birq_weight: float = 1.0
    birq_start: float = 0.1  # share of the steps trained on anchor labels alone first
    quantizer_temperature: float = 0.1  # cosine similarities / this = Gumbel-softmax logits
    diversity_weight: float = 0.1  # keeps the enhanced labels from collapsing onto few codes
    # share of the enhanced loss's gradient that reaches the label generator through the straight-through
    # Gumbel-softmax (the seed's first-order bilevel step); 0 by default: any share pulls the generator's
    # layers towards easy-to-predict labels with less phone information
    # (docs/results/2026-12-03-units-birq-balanced-equal-compute.md)
    label_grad_scale: float = 0.0
    balance_iterations: int = 3  # Sinkhorn-Knopp iterations evening out enhanced-code usage per batch (0 = off)
    # speaker adversary (0 = off): a frame-level classifier of pseudo-speakers, clustered from the
    # audio (no speaker labels), on this layer (1-based; -1 = the last), whose reversed gradient,
    # scaled by the weight, pushes the layer and those below it to drop the voice
    speaker_adversary_weight: float = 0.0
    speaker_adversary_layer: int = -1
    speaker_clusters: int = 0  # pseudo-speakers for the adversary (0: chosen by the silhouette)
    # optimisation
    steps: int = 3000
    # stop after this much compute (0 = no limit), for equal-compute comparisons: CPU time
    # summed over threads on a CPU, wall time on a GPU
    time_budget_minutes: float = 0.0
    # input frames (10 ms) of audio per batch, padding not counted: the max_duration (batch_frames / 100 s)
    # of Lhotse's DynamicBucketingSampler, which batches utterances of similar length.  Under torchrun
    # the processes share each batch: raise it with the number of GPUs to keep each one busy
    batch_frames: int = 16000
    lr: float = 1e-3
    warmup_steps: int = 200
    grad_clip: float = 5.0
    checkpoint_every: int = 100
    device: str = "auto"
    # the forward pass and losses under autocast: "bf16", "fp32" (no autocast), or "auto": bf16 on a GPU
    # that has it or a CPU with bf16 units (AMX, AVX-512 BF16), fp32 otherwise (elsewhere bf16 is emulated)
    precision: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UsrasrError(f"method must be one of {', '.join(METHODS)}, got '{self.method}'")
        if self.arch not in ARCHITECTURES:
            raise UsrasrError(f"arch must be one of {', '.join(ARCHITECTURES)}, got '{self.arch}'")
        check_precision(self.precision)
        if (self.method == "just") != bool(self.multilingual):
            raise UsrasrError("method just needs --set multilingual=DIR (a corpus of `usrasr prepare multilingual`)"
                              if self.method == "just" else f"multilingual is read by method just only, not {self.method}")
        if self.method == "just" and self.speaker_adversary_weight > 0:
            raise UsrasrError("speaker_adversary_weight is for methods bestrq and birq, not just")
        if self.just_weight < 0 or not 0 <= self.target_share < 1:
            raise UsrasrError(f"need just_weight >= 0 and target_share in [0, 1), got {self.just_weight} and "
                              f"{self.target_share}")
        if self.method == "birq" and not 1 <= self.birq_layer <= self.num_layers:
            raise UsrasrError(f"birq_layer must be in 1..{self.num_layers}, got {self.birq_layer}")
        if self.balance_iterations < 0:
            raise UsrasrError(f"balance_iterations must be >= 0, got {self.balance_iterations}")
        if self.speaker_adversary_weight < 0 or not (self.speaker_adversary_layer == -1
                                                     or 1 <= self.speaker_adversary_layer <= self.num_layers):
            raise UsrasrError(f"need speaker_adversary_weight >= 0 and speaker_adversary_layer in 1..{self.num_layers} "
                              f"or -1 (the last)")
        if self.speaker_clusters < 0 or self.speaker_clusters == 1:
            raise UsrasrError(f"speaker_clusters must be 0 (chosen) or at least 2, got {self.speaker_clusters}")
        if self.subsampling not in (1, 2, 4):
            raise UsrasrError(f"subsampling must be 1, 2 or 4, got {self.subsampling}")
