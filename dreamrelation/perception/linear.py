"""A softmax regression in numpy: the small fitted classifier the toy-world judge uses.

Deterministic (full-batch Adam from zeros, no sampling), JSON-serialisable, a few dozen lines.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import Field

from dreamrelation.configbase import StrictConfig


class Linear(StrictConfig):
    """A softmax regression on standardised features."""

    labels: list[str] = Field(description="Class names, in column order.")
    mean: list[float] = Field(description="Feature means subtracted before scoring.")
    scale: list[float] = Field(description="Feature scales divided after centring.")
    weights: list[list[float]] = Field(description="(features, classes) weight matrix.")
    bias: list[float] = Field(description="(classes,) bias.")

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """(n, classes) class probabilities of (n, features) or (features,) inputs."""
        z = (np.atleast_2d(x) - np.asarray(self.mean)) / np.asarray(self.scale)
        logits = z @ np.asarray(self.weights) + np.asarray(self.bias)
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)


def fit_softmax(x: np.ndarray, y: Sequence[str], labels: Sequence[str], l2: float = 1e-3, steps: int = 3000) -> Linear:
    """Deterministic full-batch gradient descent (Adam) on the mean cross-entropy + l2 |W|^2."""
    x = np.asarray(x, float)
    index = {name: j for j, name in enumerate(labels)}
    target = np.zeros((len(x), len(labels)))
    target[np.arange(len(x)), [index[v] for v in y]] = 1.0
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mean) / scale
    params = [np.zeros((x.shape[1], len(labels))), np.zeros(len(labels))]
    moments = [[np.zeros_like(p), np.zeros_like(p)] for p in params]
    lr, beta1, beta2 = 0.05, 0.9, 0.999
    for step in range(1, steps + 1):
        logits = z @ params[0] + params[1]
        logits -= logits.max(axis=1, keepdims=True)
        prob = np.exp(logits)
        prob /= prob.sum(axis=1, keepdims=True)
        error = (prob - target) / len(x)
        grads = [z.T @ error + 2 * l2 * params[0], error.sum(axis=0)]
        for p, g, m in zip(params, grads, moments):
            m[0] = beta1 * m[0] + (1 - beta1) * g
            m[1] = beta2 * m[1] + (1 - beta2) * g * g
            p -= lr * (m[0] / (1 - beta1**step)) / (np.sqrt(m[1] / (1 - beta2**step)) + 1e-8)
    def rounded(a: np.ndarray) -> list:
        return np.round(a, 6).tolist()

    return Linear(labels=list(labels), mean=rounded(mean), scale=rounded(scale),
                  weights=rounded(params[0]), bias=rounded(params[1]))
