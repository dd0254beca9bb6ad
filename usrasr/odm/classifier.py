"""Small classifiers of continuous features with a restart dimension in every weight.

Each restart is its own model; all restarts see the same features and train as
one batched model (one einsum per layer), so R restarts cost one pass over the
data instead of R.  The receptive field is the caller's: a segment's feature
vector, or a frame stacked with its neighbours.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class RestartClassifier(nn.Module):
    """Linear (``hidden=0``) or one-hidden-layer softmax classifiers, ``restarts`` of them."""

    def __init__(self, restarts: int, dim: int, labels: int, hidden: int = 0, init_scale: float = 1.0,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.restarts, self.dim, self.labels, self.hidden = restarts, dim, labels, hidden
        shapes = [(dim, hidden), (hidden, labels)] if hidden else [(dim, labels)]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in shapes:
            w = torch.randn(restarts, fan_in, fan_out, generator=generator) * (init_scale / math.sqrt(fan_in))
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.zeros(restarts, fan_out)))

    def forward(self, features: Tensor) -> Tensor:
        """Logits (restarts, steps, labels) of features (steps, dim), shared by every restart."""
        x = torch.einsum("td,rdh->rth", features, self.weights[0]) + self.biases[0][:, None]
        for w, b in zip(self.weights[1:], self.biases[1:]):
            x = torch.einsum("rth,rhv->rtv", torch.relu(x), w) + b[:, None]
        return x

    def select(self, restarts: list[int]) -> RestartClassifier:
        """A classifier holding only the listed restarts (copies of their weights)."""
        out = RestartClassifier(len(restarts), self.dim, self.labels, self.hidden)
        with torch.no_grad():
            for dst, src in zip(list(out.weights) + list(out.biases), list(self.weights) + list(self.biases)):
                dst.copy_(src[restarts])
        return out
