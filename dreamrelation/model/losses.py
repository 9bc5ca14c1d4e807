"""Losses of DreamRelation: the HMT mask-weighted flow loss (METHOD.md §3) and the space-time
relational contrastive loss with its FIFO memory banks (METHOD.md §4)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def masked_flow_loss(
    v_pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, lambda_m: float = 50.0
) -> torch.Tensor:
    """L_rec = mean[(lambda_m * M + 1) * (v_pred - u)^2] (METHOD.md §3), computed in float32.

    `v_pred`, `target`: (B, C, f, h, w). `mask`: (B, f, h, w) or (f, h, w) in [0, 1], broadcast
    over channels; None gives the plain (unweighted) flow-matching loss.
    """
    error = (v_pred.float() - target.float()).square()
    if mask is None:
        return error.mean()
    weight = lambda_m * mask.float() + 1.0
    weight = weight.unsqueeze(-4)  # channel axis: (B, 1, f, h, w) or (1, f, h, w)
    return (weight * error).mean()


class MemoryBank:
    """FIFO bank of detached feature tensors (METHOD.md §4); part of the training state.

    Each entry has the same shape; pushing beyond `capacity` evicts the oldest entries first.
    All entries live on `device` (the training device, METHOD.md §4): pushed entries are moved
    there and `load_state_dict` restores saved entries there, whatever device they were saved
    or loaded on (a checkpoint is read onto the CPU).
    """

    def __init__(self, capacity: int, device: str | torch.device = "cpu") -> None:
        self.capacity = capacity
        self.device = torch.device(device)
        self.items: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.items)

    def push(self, entries: torch.Tensor) -> None:
        """Append `entries` (N, ...) in order, detached and on the bank's device; keep the newest `capacity`."""
        for entry in entries.detach().to(self.device):
            self.items.append(entry.clone())
        if len(self.items) > self.capacity:
            del self.items[: len(self.items) - self.capacity]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """min(n, len) distinct entries drawn uniformly, stacked (k, ...); None when empty or n == 0.

        The draw uses the (CPU) `generator`, so it does not depend on the bank's device.
        """
        k = min(n, len(self.items))
        if k == 0:
            return None
        order = torch.randperm(len(self.items), generator=generator)[:k].tolist()
        return torch.stack([self.items[i] for i in order])

    def state_dict(self) -> dict[str, Any]:
        items = torch.stack(self.items) if self.items else None
        return {"capacity": self.capacity, "items": items}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore capacity and entries; the entries are put on the bank's device."""
        self.capacity = int(state["capacity"])
        items = state["items"]
        self.items = [] if items is None else [entry.to(self.device).clone() for entry in items]


def relation_features(v_pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Appearance features s (f, C) = spatial mean of v_pred (C, f, h, w), and dynamics d = s[1:] - s[:-1]."""
    s = v_pred.float().mean(dim=(-2, -1)).transpose(0, 1)
    return s, s[1:] - s[:-1]


def rcl_loss(
    anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, tau: float = 0.07
) -> torch.Tensor:
    """Multi-positive InfoNCE (METHOD.md §4), averaged over anchors.

    anchors (K, C): dynamics features of this step. positives (P, K, C): anchor k's positives
    are positives[:, k]. negatives (N, C): shared by all anchors. Features are L2-normalized and
    logits are cos / tau; per anchor: -log(sum_pos exp / (sum_pos exp + sum_neg exp)).
    """
    a = F.normalize(anchors.float(), dim=-1)
    p = F.normalize(positives.float(), dim=-1)
    n = F.normalize(negatives.float(), dim=-1)
    pos_logits = torch.einsum("kc,pkc->kp", a, p) / tau  # (K, P)
    neg_logits = a @ n.T / tau  # (K, N)
    log_pos = torch.logsumexp(pos_logits, dim=1)
    log_all = torch.logsumexp(torch.cat([pos_logits, neg_logits], dim=1), dim=1)
    return (log_all - log_pos).mean()


def relational_contrastive_step(
    v_pred: torch.Tensor,
    pos_bank: MemoryBank,
    neg_bank: MemoryBank,
    n_pos: int = 4,
    n_neg: int = 10,
    tau: float = 0.07,
    generator: torch.Generator | None = None,
) -> torch.Tensor | None:
    """RCL of one training step (METHOD.md §4), then the bank update.

    Anchors are the dynamics features d of `v_pred` (C, f, h, w). Positives: the matching
    dynamics features of up to `n_pos` entries drawn from `pos_bank`. Negatives: the f frame
    features s of this step (not detached) plus up to `n_neg - f` features drawn from
    `neg_bank`, so there are max(f, n_neg) when the bank is full enough. Returns None (no
    contrastive term) while the positive bank is empty or f < 2. Both banks are updated after
    the loss: d goes to `pos_bank`, the rows of s to `neg_bank`.
    """
    s, d = relation_features(v_pred)
    loss = None
    positives = pos_bank.sample(n_pos, generator) if len(d) > 0 else None
    if positives is not None:
        extra = neg_bank.sample(max(n_neg - len(s), 0), generator)
        negatives = s if extra is None else torch.cat([s, extra.to(s)])
        loss = rcl_loss(d, positives.to(d), negatives, tau)
    if len(d) > 0:
        pos_bank.push(d.unsqueeze(0))
    neg_bank.push(s)
    return loss
