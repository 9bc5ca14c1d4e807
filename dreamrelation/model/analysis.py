"""Subspace similarity of the Q, K and V projection weights (METHOD.md §7, paper Sec. 3.3).

For two weight matrices A and B (nn.Linear weights, shape (out, in)) with top-r left singular
vectors U_A, U_B (out, r): similarity(A, B) = ||U_A^T U_B||_F^2 / r, in [0, 1]; 1 when the
column spaces spanned by the top-r directions coincide, 0 when they are orthogonal. Two
independent random r-dimensional subspaces of R^out give r / out on average, reported as
`random_subspace_expectation` for context.

Computed for every block, for Q-K, Q-V and K-V of two attentions per block: on a
`MochiTransformer3DModel` the joint attention's vision stream (`attn1.to_q/to_k/to_v`) and text
stream (`attn1.add_q_proj/add_k_proj/add_v_proj`); on a `WanTransformer3DModel` (METHOD.md §9)
the self-attention (`attn1.to_q/to_k/to_v`) and the cross-attention (`attn2.to_q/to_k/to_v`),
so users with Wan weights can check whether the paper's Q-K / V split holds there. The family
is read from the weight names. The weights come from an in-memory model or from a folder of safetensors files,
read one tensor at a time (a full-size model is never materialized). SVDs run in float32; use
a GPU `device` for the full-size model (3 SVDs of 3072-row matrices per stream and block).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageFont
from safetensors import safe_open

from dreamrelation.model.families import FAMILIES

#: Per family: the blocks' prefix and, per stream, the Q, K, V modules inside a block.
LAYOUTS: dict[str, tuple[str, Mapping[str, tuple[str, str, str]]]] = {
    family.name: (family.blocks, family.qkv_streams) for family in FAMILIES.values()
}
PAIRS: tuple[str, ...] = ("q-k", "q-v", "k-v")
_PAIR_INDEX = {"q-k": (0, 1), "q-v": (0, 2), "k-v": (1, 2)}
_BLOCK_KEY = {family: re.compile(rf"^{prefix}\.(\d+)\.attn1\.") for family, (prefix, _) in LAYOUTS.items()}


def top_left_singular_vectors(weight: torch.Tensor, rank: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """(rows, rank) float32: the left singular vectors of the `rank` largest singular values."""
    if weight.ndim != 2:
        raise ValueError(f"expected a 2-D weight matrix, got shape {tuple(weight.shape)}")
    if not 1 <= rank <= min(weight.shape):
        raise ValueError(f"rank must be in [1, {min(weight.shape)}] for a {tuple(weight.shape)} matrix, got {rank}")
    matrix = weight.detach().to(device=device, dtype=torch.float32)
    left, _, _ = torch.linalg.svd(matrix, full_matrices=False)
    return left[:, :rank]


def subspace_similarity_of_bases(basis_a: torch.Tensor, basis_b: torch.Tensor) -> float:
    """||U_A^T U_B||_F^2 / r for orthonormal bases (rows, r) of equal shape (METHOD.md §7)."""
    if basis_a.shape != basis_b.shape:
        raise ValueError(f"bases must have equal shapes, got {tuple(basis_a.shape)} and {tuple(basis_b.shape)}")
    rank = basis_a.shape[1]
    return float((basis_a.T @ basis_b).pow(2).sum() / rank)


def subspace_similarity(a: torch.Tensor, b: torch.Tensor, rank: int, device: str | torch.device = "cpu") -> float:
    """Subspace similarity of two weight matrices with the same number of rows (METHOD.md §7)."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"matrices must be 2-D with equal row counts, got {tuple(a.shape)} and {tuple(b.shape)}")
    return subspace_similarity_of_bases(
        top_left_singular_vectors(a, rank, device), top_left_singular_vectors(b, rank, device)
    )


# --------------------------------------------------------------------------------------------
# Weight sources
# --------------------------------------------------------------------------------------------

WeightGetter = Callable[[str], torch.Tensor | None]


def _module_weights(model: torch.nn.Module) -> tuple[str, int, WeightGetter]:
    """Family, block count and a name -> weight lookup for an in-memory transformer (peft layers: base weight)."""
    family = next((f for f, (prefix, _) in LAYOUTS.items() if hasattr(model, prefix)), None)
    if family is None:
        raise ValueError(f"{type(model).__name__} has neither transformer_blocks nor blocks; "
                         "expected a MochiTransformer3DModel or a WanTransformer3DModel")
    blocks = getattr(model, LAYOUTS[family][0])

    def get(name: str) -> torch.Tensor | None:
        path = name.removesuffix(".weight")
        try:
            module = model.get_submodule(path)
        except AttributeError:
            return None
        module = getattr(module, "base_layer", module)
        return module.weight

    return family, len(blocks), get


def _transformer_folder(folder: Path) -> Path:
    """The folder holding the transformer weights (a pipeline folder's transformer/ is accepted)."""
    if (folder / "transformer").is_dir() and not list(folder.glob("*.safetensors")):
        return folder / "transformer"
    return folder


def _folder_weights(folder: Path) -> tuple[str, int, WeightGetter]:
    """Family, block count and a lazy name -> weight lookup over the safetensors files of a folder."""
    folder = _transformer_folder(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors files in {folder}; expected a saved Mochi or Wan transformer")
    key_to_file: dict[str, Path] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                key_to_file[key] = file
    found = {family: {int(m.group(1)) for key in key_to_file if (m := pattern.match(key))}
             for family, pattern in _BLOCK_KEY.items()}
    family = next((f for f, ids in found.items() if ids), None)
    if family is None:
        raise ValueError(f"no transformer_blocks.N.attn1.* (Mochi) or blocks.N.attn1.* (Wan) weights in {folder}")
    block_ids = found[family]

    def get(name: str) -> torch.Tensor | None:
        file = key_to_file.get(name)
        if file is None:
            return None
        with safe_open(str(file), framework="pt") as handle:
            return handle.get_tensor(name)

    return family, max(block_ids) + 1, get


# --------------------------------------------------------------------------------------------
# Per-block analysis, JSON and heatmap
# --------------------------------------------------------------------------------------------


def qkv_subspace_similarity(
    source: torch.nn.Module | str | Path, rank: int = 16, device: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Q-K, Q-V, K-V subspace similarity of every block and stream (METHOD.md §7).

    Streams: `vision` and `text` on Mochi, `self` and `cross` (attention) on Wan. Returns a
    JSON-able dict: `family`, `streams[stream][pair]` a list over blocks (None where a
    projection is missing), `mean[stream][pair]` the average over blocks.
    """
    if isinstance(source, torch.nn.Module):
        family, num_blocks, get = _module_weights(source)
    else:
        family, num_blocks, get = _folder_weights(Path(source))
    prefix, layout = LAYOUTS[family]
    streams: dict[str, dict[str, list[float | None]]] = {}
    baseline: dict[str, float | None] = {}
    for stream, names in layout.items():
        values: dict[str, list[float | None]] = {pair: [] for pair in PAIRS}
        rows: int | None = None
        for block in range(num_blocks):
            weights = [get(f"{prefix}.{block}.{name}.weight") for name in names]
            bases = [None if w is None else top_left_singular_vectors(w, rank, device) for w in weights]
            for pair in PAIRS:
                first, second = (bases[i] for i in _PAIR_INDEX[pair])
                value = None if first is None or second is None else subspace_similarity_of_bases(first, second)
                values[pair].append(value)
            rows = rows or next((w.shape[0] for w in weights if w is not None), None)
        streams[stream] = values
        baseline[stream] = rank / rows if rows else None
    mean = {
        stream: {pair: _mean([v for v in values[pair] if v is not None]) for pair in PAIRS}
        for stream, values in streams.items()
    }
    return {
        "family": family,
        "rank": rank,
        "num_blocks": num_blocks,
        "pairs": list(PAIRS),
        "modules": {stream: [f"{prefix}.N.{name}" for name in names] for stream, names in layout.items()},
        "streams": streams,
        "mean": mean,
        "random_subspace_expectation": baseline,
    }


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _color(value: float) -> tuple[int, int, int]:
    """Blue (0) -> near-white (0.5) -> red (1)."""
    low, mid, high = (40, 70, 160), (245, 245, 245), (190, 30, 40)
    value = min(max(value, 0.0), 1.0)
    start, end, t = (low, mid, value * 2) if value < 0.5 else (mid, high, value * 2 - 1)
    return tuple(round(s + (e - s) * t) for s, e in zip(start, end, strict=True))  # type: ignore[return-value]


def save_heatmap_png(result: dict[str, Any], path: str | Path, cell_w: int = 64, cell_h: int = 18) -> Path:
    """Draw the result of `qkv_subspace_similarity` as a heatmap: rows blocks, columns stream/pair."""
    columns = [(stream, pair) for stream in result["streams"] for pair in PAIRS]
    num_blocks = int(result["num_blocks"])
    font = ImageFont.load_default()
    left, top, bottom = 64, 48, 40
    width = left + cell_w * len(columns) + 8
    height = top + cell_h * num_blocks + bottom
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((4, 4), f"Q/K/V subspace similarity, r={result['rank']}", fill="black", font=font)
    for col, (stream, pair) in enumerate(columns):
        x = left + col * cell_w
        draw.text((x + 4, 20), stream, fill="black", font=font)
        draw.text((x + 4, 32), pair.upper(), fill="black", font=font)
        for block in range(num_blocks):
            y = top + block * cell_h
            value = result["streams"][stream][pair][block]
            fill = (200, 200, 200) if value is None else _color(value)
            draw.rectangle([x, y, x + cell_w - 1, y + cell_h - 1], fill=fill, outline="white")
            label = "n/a" if value is None else f"{value:.2f}"
            ink = "white" if value is not None and (value < 0.2 or value > 0.8) else "black"
            draw.text((x + 4, y + 3), label, fill=ink, font=font)
    for block in range(num_blocks):
        draw.text((4, top + block * cell_h + 3), f"block {block}", fill="black", font=font)
    bar_y = top + cell_h * num_blocks + 12
    bar_w = cell_w * len(columns)
    for i in range(bar_w):
        draw.line([left + i, bar_y, left + i, bar_y + 8], fill=_color(i / max(bar_w - 1, 1)))
    draw.text((left, bar_y + 10), "0", fill="black", font=font)
    draw.text((left + bar_w - 8, bar_y + 10), "1", fill="black", font=font)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, format="PNG")
    return out


def analyze_qkv(
    source: torch.nn.Module | str | Path, out_dir: str | Path, rank: int = 16, device: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Compute the analysis and write `qkv_similarity.json` and `qkv_similarity.png` to `out_dir`."""
    result = qkv_subspace_similarity(source, rank, device)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "qkv_similarity.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    save_heatmap_png(result, folder / "qkv_similarity.png")
    return result
