"""FSAs on tensors, graph builders and differentiable sequence marginals.

See ``docs/marginals.md`` for a walk-through and the conventions.
"""

from usrasr.graph.fsa import Fsa, FsaVec
from usrasr.graph.marginals import ArcPosteriors, BestPath, arc_posteriors, best_path, total_scores
from usrasr.graph.topo import (
    arpa_to_fsa,
    bigram_lm_fsa,
    compose_topo_lm,
    ctc_lm_graph,
    ctc_topo,
    hmm_lm_graph,
    hmm_topo,
)

__all__ = [
    "ArcPosteriors",
    "BestPath",
    "Fsa",
    "FsaVec",
    "arc_posteriors",
    "arpa_to_fsa",
    "best_path",
    "bigram_lm_fsa",
    "compose_topo_lm",
    "ctc_lm_graph",
    "ctc_topo",
    "hmm_lm_graph",
    "hmm_topo",
    "total_scores",
]
