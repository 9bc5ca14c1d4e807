"""Q/K/V subspace similarity (METHOD.md §7) with constructed matrices, a tiny Mochi and a tiny Wan."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from dreamrelation.model import analysis


def _from_singular(basis: torch.Tensor, values: list[float], cols: int = 5, seed: int = 0) -> torch.Tensor:
    """W = U diag(s) V^T with U = given orthonormal columns, V random orthonormal."""
    generator = torch.Generator().manual_seed(seed)
    right, _ = torch.linalg.qr(torch.randn(cols, len(values), generator=generator, dtype=torch.float64))
    return basis @ torch.diag(torch.tensor(values, dtype=torch.float64)) @ right.T


def _e(*indices: int, dim: int = 8) -> torch.Tensor:
    return torch.eye(dim, dtype=torch.float64)[:, list(indices)]


def test_identical_subspaces_give_one() -> None:
    a = torch.randn(8, 6, generator=torch.Generator().manual_seed(0))
    mixing = torch.randn(6, 6, generator=torch.Generator().manual_seed(1))
    for rank in (1, 3, 6):
        assert analysis.subspace_similarity(a, 3.0 * a, rank) == pytest.approx(1.0, abs=1e-5)
    # Full rank r = 6: any invertible mixing of the columns keeps the column space.
    assert analysis.subspace_similarity(a, a @ mixing, 6) == pytest.approx(1.0, abs=1e-5)


def test_orthogonal_subspaces_give_zero() -> None:
    a = _from_singular(_e(0, 1, 2), [3.0, 2.0, 1.0], seed=2)
    b = _from_singular(_e(3, 4, 5), [3.0, 2.0, 1.0], seed=3)
    for rank in (1, 2, 3):
        assert analysis.subspace_similarity(a, b, rank) == pytest.approx(0.0, abs=1e-6)


def test_similarity_depends_on_r() -> None:
    # Shared top-2 directions e0, e1; then A continues with e2, e3 and B with e4, e5.
    a = _from_singular(_e(0, 1, 2, 3), [4.0, 3.0, 2.0, 1.0], seed=4)
    b = _from_singular(_e(0, 1, 4, 5), [4.0, 3.0, 2.0, 1.0], seed=5)
    expected = {1: 1.0, 2: 1.0, 3: 2 / 3, 4: 2 / 4}
    for rank, value in expected.items():
        assert analysis.subspace_similarity(a, b, rank) == pytest.approx(value, abs=1e-5)


def test_partially_aligned_top_direction() -> None:
    tilted = (_e(0) + _e(1)) / math.sqrt(2)
    a = _from_singular(_e(0), [1.0], seed=6)
    b = _from_singular(tilted, [1.0], seed=7)
    assert analysis.subspace_similarity(a, b, 1) == pytest.approx(0.5, abs=1e-6)  # cos^2 45°


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError, match="rank must be in"):
        analysis.top_left_singular_vectors(torch.zeros(4, 3), 4)
    with pytest.raises(ValueError, match="equal row counts"):
        analysis.subspace_similarity(torch.zeros(4, 3), torch.zeros(5, 3), 1)
    with pytest.raises(ValueError, match="2-D"):
        analysis.top_left_singular_vectors(torch.zeros(4), 1)


def _tiny_mochi(num_layers: int = 3):  # noqa: ANN202
    from diffusers import MochiTransformer3DModel

    torch.manual_seed(0)
    return MochiTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=num_layers,
        pooled_projection_dim=16,
        text_embed_dim=16,
        time_embed_dim=32,
    )


def test_tiny_mochi_constructed_blocks_folder_and_outputs(tmp_path: Path) -> None:
    model = _tiny_mochi()
    attn = model.transformer_blocks[0].attn1
    with torch.no_grad():
        # Vision stream of block 0: K spans Q's top-4 directions, V spans orthogonal ones.
        q = torch.diag(torch.tensor([8.0, 7, 6, 5] + [0.1] * 12))
        v = torch.diag(torch.tensor([0.1] * 8 + [8.0, 7, 6, 5] + [0.1] * 4))
        attn.to_q.weight.copy_(q)
        attn.to_k.weight.copy_(2.0 * q)
        attn.to_v.weight.copy_(v)
        # Text stream of block 1: Q and K identical.
        text = model.transformer_blocks[1].attn1
        text.add_k_proj.weight.copy_(text.add_q_proj.weight)

    result = analysis.analyze_qkv(model, tmp_path / "memory", rank=4)
    vision, text_stream = result["streams"]["vision"], result["streams"]["text"]
    assert result["num_blocks"] == 3 and result["rank"] == 4
    assert vision["q-k"][0] == pytest.approx(1.0, abs=1e-5)
    assert vision["q-v"][0] == pytest.approx(0.0, abs=1e-6)
    assert vision["k-v"][0] == pytest.approx(0.0, abs=1e-6)
    assert text_stream["q-k"][1] == pytest.approx(1.0, abs=1e-5)
    assert all(len(values) == 3 for stream in result["streams"].values() for values in stream.values())
    assert result["random_subspace_expectation"] == {"vision": 4 / 16, "text": 4 / 16}
    assert result["mean"]["vision"]["q-k"] == pytest.approx(sum(vision["q-k"]) / 3)

    # The same numbers from the weights saved to a folder (read lazily from safetensors).
    model.save_pretrained(tmp_path / "transformer")
    from_folder = analysis.qkv_subspace_similarity(tmp_path / "transformer", rank=4)
    for stream in ("vision", "text"):
        for pair in analysis.PAIRS:
            assert from_folder["streams"][stream][pair] == pytest.approx(result["streams"][stream][pair], abs=1e-6)
    # A pipeline folder with a transformer/ subfolder is accepted too.
    assert analysis.qkv_subspace_similarity(tmp_path, rank=4)["num_blocks"] == 3

    saved = json.loads((tmp_path / "memory" / "qkv_similarity.json").read_text())
    assert saved["streams"]["vision"]["q-k"][0] == pytest.approx(1.0, abs=1e-5)
    with Image.open(tmp_path / "memory" / "qkv_similarity.png") as image:
        assert image.format == "PNG" and image.size[0] > 6 * 40 and image.size[1] > 3 * 15


def test_tiny_wan_self_and_cross_attention_from_a_folder_through_the_flow(tmp_path: Path) -> None:
    """issue 23 §2: `analyze-qkv --model-dir` on a Wan folder: self- and cross-attention streams."""
    from diffusers import WanTransformer3DModel

    from dreamrelation.flows.analysis import qkv_analysis

    model = WanTransformer3DModel(num_attention_heads=2, attention_head_dim=8, num_layers=2, ffn_dim=32,
                                  text_dim=16, freq_dim=16)
    with torch.no_grad():
        q = torch.diag(torch.tensor([8.0, 7, 6, 5] + [0.1] * 12))
        model.blocks[0].attn1.to_q.weight.copy_(q)
        model.blocks[0].attn1.to_k.weight.copy_(3.0 * q)  # self-attention Q-K share their top-4 subspace
        model.blocks[0].attn1.to_v.weight.copy_(torch.diag(torch.tensor([0.1] * 8 + [8.0, 7, 6, 5] + [0.1] * 4)))
        model.blocks[1].attn2.to_v.weight.copy_(model.blocks[1].attn2.to_k.weight)  # cross-attention K = V
    model.save_pretrained(tmp_path / "wan" / "transformer")
    summary = qkv_analysis(model_dir=tmp_path / "wan", rank=4, out_dir=tmp_path / "out")
    result = json.loads(Path(summary["json"]).read_text())
    assert result["family"] == "wan" and result["num_blocks"] == 2
    assert set(result["streams"]) == {"self", "cross"}
    assert result["modules"]["cross"] == ["blocks.N.attn2.to_q", "blocks.N.attn2.to_k", "blocks.N.attn2.to_v"]
    assert result["streams"]["self"]["q-k"][0] == pytest.approx(1.0, abs=1e-5)
    assert result["streams"]["self"]["q-v"][0] == pytest.approx(0.0, abs=1e-6)
    assert result["streams"]["cross"]["k-v"][1] == pytest.approx(1.0, abs=1e-5)
    in_memory = analysis.qkv_subspace_similarity(model, rank=4)
    assert in_memory["streams"]["cross"]["k-v"] == pytest.approx(result["streams"]["cross"]["k-v"], abs=1e-6)
    assert Path(summary["png"]).is_file()


def test_heatmap_marks_missing_values(tmp_path: Path) -> None:
    result = {
        "rank": 2,
        "num_blocks": 2,
        "streams": {
            "vision": {"q-k": [1.0, 0.5], "q-v": [0.0, None], "k-v": [0.2, 0.3]},
            "text": {"q-k": [0.9, 0.8], "q-v": [0.1, 0.1], "k-v": [0.1, 0.0]},
        },
    }
    path = analysis.save_heatmap_png(result, tmp_path / "sub" / "h.png", cell_w=40, cell_h=20)
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        left, top = 64, 48
        assert rgb.getpixel((left + 1 * 40 + 35, top + 1 * 20 + 15)) == (200, 200, 200)  # None -> gray
        assert rgb.getpixel((left + 35, top + 15)) == (190, 30, 40)  # 1.0 -> red


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no .safetensors"):
        analysis.qkv_subspace_similarity(tmp_path)
    with pytest.raises(ValueError, match="neither transformer_blocks nor blocks"):
        analysis.qkv_subspace_similarity(torch.nn.Linear(2, 2))
