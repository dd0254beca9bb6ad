"""``usrasr bench``: speed and memory benchmarks that print ratios side by side.

One module per benchmark; this registry names them for the command line
(:mod:`usrasr.cli` builds the ``bench`` group from it, importing a benchmark
only when it runs).
"""

BENCHMARKS: dict[str, tuple[str, str]] = {
    "marginals": ("usrasr.bench.marginals:marginals", "FSA marginals: throughput and memory vs a naive reference."),
    "decode": ("usrasr.bench.decode:decode", "Decoding real-time factor: search vs network."),
    "restarts": ("usrasr.bench.restarts:restarts", "Seq-CE restarts one at a time vs as one batch."),
    "units": ("usrasr.bench.units:units", "Unit sources side by side: fbank, BEST-RQ, BiRQ (PER, PNMI)."),
    "odm": ("usrasr.bench.odm:odm", "ODM search: batched restarts vs one at a time."),
    "precision": ("usrasr.bench.precision:precision", "CTC training steps: float32 vs bf16 autocast."),
}
