"""Mask-weighted flow loss (METHOD.md §3) and the relational contrastive loss + banks (§4)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dreamrelation.model.losses import (
    MemoryBank,
    masked_flow_loss,
    rcl_loss,
    relation_features,
    relational_contrastive_step,
)


def test_masked_flow_loss_by_hand() -> None:
    v = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 2, 1, 1, 2)  # (B, C, f, h, w)
    u = torch.zeros(1, 2, 1, 1, 2)
    mask = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)  # (B, f, h, w): first pixel covered
    # weights per pixel (lambda_m * M + 1): [51, 1] for both channels
    expected = (51 * 1 + 1 * 4 + 51 * 9 + 1 * 16) / 4
    assert math.isclose(masked_flow_loss(v, u, mask, lambda_m=50.0).item(), expected)
    assert math.isclose(masked_flow_loss(v, u, mask[0], lambda_m=50.0).item(), expected)  # (f, h, w)
    assert math.isclose(masked_flow_loss(v, u, None).item(), (1 + 4 + 9 + 16) / 4)
    assert math.isclose(masked_flow_loss(v, u, torch.zeros(1, 1, 1, 2)).item(), 7.5)  # empty mask = plain


def test_memory_bank_is_fifo_detached_and_restorable() -> None:
    bank = MemoryBank(capacity=3)
    assert bank.sample(2) is None and len(bank) == 0
    x = torch.arange(5.0, requires_grad=True)
    bank.push((x * 1).view(5, 1)[:2])  # entries 0, 1
    bank.push((x * 1).view(5, 1)[2:])  # entries 2, 3, 4 -> 0 and 1 evicted first
    assert [e.item() for e in bank.items] == [2.0, 3.0, 4.0]
    assert not any(e.requires_grad for e in bank.items)
    drawn = bank.sample(10, torch.Generator().manual_seed(0))
    assert drawn.shape == (3, 1) and sorted(drawn.flatten().tolist()) == [2.0, 3.0, 4.0]  # capped at len
    assert bank.sample(2, torch.Generator().manual_seed(0)).shape == (2, 1)

    restored = MemoryBank(capacity=99)
    restored.load_state_dict(bank.state_dict())
    assert restored.capacity == 3 and [e.item() for e in restored.items] == [2.0, 3.0, 4.0]
    empty = MemoryBank(4)
    empty.load_state_dict(MemoryBank(4).state_dict())
    assert len(empty) == 0


def _info_nce_by_hand(anchors, positives, negatives, tau):
    """The formula of METHOD.md §4 with explicit loops."""
    def cos(a, b):
        return float(a @ b / (a.norm() * b.norm()))

    losses = []
    for k, a in enumerate(anchors):
        pos = sum(math.exp(cos(a, p[k]) / tau) for p in positives)
        neg = sum(math.exp(cos(a, n) / tau) for n in negatives)
        losses.append(-math.log(pos / (pos + neg)))
    return sum(losses) / len(losses)


def test_rcl_loss_matches_the_formula() -> None:
    g = torch.Generator().manual_seed(0)
    anchors, positives, negatives = torch.randn(3, 5, generator=g), torch.randn(2, 3, 5, generator=g), torch.randn(
        4, 5, generator=g
    )
    for tau in (0.07, 0.5):
        expected = _info_nce_by_hand(anchors, positives, negatives, tau)
        assert math.isclose(rcl_loss(anchors, positives, negatives, tau).item(), expected, rel_tol=1e-5)


def test_relation_features_are_frame_means_and_their_differences() -> None:
    v = torch.randn(12, 4, 3, 5)
    s, d = relation_features(v)
    assert s.shape == (4, 12) and d.shape == (3, 12)
    assert torch.allclose(s[2], v[:, 2].mean(dim=(1, 2)))
    assert torch.allclose(d[1], s[2] - s[1])


def test_first_step_has_no_contrastive_term_and_fills_the_banks() -> None:
    pos, neg = MemoryBank(10), MemoryBank(64)
    v = torch.randn(12, 4, 2, 2)
    assert relational_contrastive_step(v, pos, neg) is None
    assert len(pos) == 1 and pos.items[0].shape == (3, 12)  # one dynamics entry (f - 1, C)
    assert len(neg) == 4 and neg.items[0].shape == (12,)  # f frame features
    assert relational_contrastive_step(torch.randn(12, 1, 2, 2), MemoryBank(2), MemoryBank(2)) is None  # f = 1


def test_positives_and_negatives_are_capped_and_drawn_from_the_banks() -> None:
    g = torch.Generator().manual_seed(0)
    f, c = 3, 12
    pos, neg = MemoryBank(10), MemoryBank(64)
    pos.push(torch.randn(5, f - 1, c, generator=g))
    neg.push(torch.randn(20, c, generator=g))
    v = torch.randn(c, f, 2, 2, generator=g, requires_grad=True)
    n_pos, n_neg = 2, 7  # 2 of 5 positives; 3 current frames + 4 of 20 banked negatives

    # reproduce the draws: positives first, then the negative top-up
    replay = torch.Generator().manual_seed(1)
    positives = pos.sample(n_pos, replay)
    extra = neg.sample(n_neg - f, replay)
    s, d = relation_features(v)
    expected = rcl_loss(d, positives, torch.cat([s, extra]), tau=0.1)

    loss = relational_contrastive_step(v, pos, neg, n_pos, n_neg, 0.1, torch.Generator().manual_seed(1))
    assert torch.allclose(loss, expected)
    assert len(pos) == 6 and len(neg) == 23  # banks updated after the loss

    # a bank smaller than the request uses all it has (the loss is order invariant)
    small_pos, small_neg = MemoryBank(10), MemoryBank(64)
    small_pos.push(positives)
    small_neg.push(extra[:2])
    capped = relational_contrastive_step(v, small_pos, small_neg, 4, 10, 0.1, torch.Generator().manual_seed(5))
    assert torch.allclose(capped, rcl_loss(d, positives, torch.cat([s, extra[:2]]), tau=0.1))


def test_gradients_flow_into_current_negatives_but_not_into_banked_features() -> None:
    g = torch.Generator().manual_seed(0)
    c, f = 12, 4
    pos, neg = MemoryBank(10), MemoryBank(64)
    pos.push(torch.randn(2, f - 1, c, generator=g))
    banked = torch.randn(3, c, generator=g, requires_grad=True)
    neg.push(banked * 2)
    v = torch.randn(c, f, 2, 2, generator=g, requires_grad=True)

    loss = relational_contrastive_step(v, pos, neg, n_pos=4, n_neg=10)
    (grad,) = torch.autograd.grad(loss, v)
    assert banked.grad is None and not any(e.requires_grad for e in neg.items + pos.items)

    # the same loss with the current frames detached as negatives has a different gradient:
    # so the current negatives do carry gradient
    v2 = v.detach().clone().requires_grad_(True)
    s, d = relation_features(v2)
    negatives = torch.cat([s.detach(), torch.stack(neg.items[:3])])
    detached = rcl_loss(d, torch.stack(pos.items[:2]), negatives)
    (grad_detached,) = torch.autograd.grad(detached, v2)
    assert torch.allclose(detached, loss.detach())
    assert not torch.allclose(grad, grad_detached)
    assert F.cosine_similarity(grad.flatten(), grad_detached.flatten(), dim=0) < 0.9999


def test_a_bank_restored_from_cpu_holds_its_entries_on_the_training_device() -> None:
    """Resume on GPU: the checkpoint is read onto the CPU, then the steps push device tensors.
    The meta device stands in for CUDA: mixing it with CPU entries fails as CUDA does."""
    saved = MemoryBank(capacity=4)
    saved.push(torch.randn(3, 2, 12))  # three CPU entries, as `torch.load(map_location="cpu")` gives
    bank = MemoryBank(capacity=4, device="meta")
    bank.load_state_dict(saved.state_dict())
    assert len(bank) == 3 and all(e.device.type == "meta" for e in bank.items)

    bank.push(torch.empty(2, 2, 12, device="meta"))  # two steps' entries from the training device
    assert len(bank) == 4 and all(e.device.type == "meta" for e in bank.items)
    drawn = bank.sample(4, torch.Generator().manual_seed(0))  # the draw spans restored and new entries
    assert drawn.shape == (4, 2, 12) and drawn.device.type == "meta"
    assert bank.state_dict()["items"].shape == (4, 2, 12)  # the next checkpoint

    cpu_bank = MemoryBank(capacity=2)  # entries pushed from elsewhere are moved to the bank's device
    cpu_bank.push(torch.ones(1, 3, dtype=torch.float64))
    assert cpu_bank.device == torch.device("cpu") and cpu_bank.items[0].device.type == "cpu"
