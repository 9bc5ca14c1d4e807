"""Q/K/V subspace-similarity analysis (METHOD.md §7): a plain function and a Prefect flow.

`qkv_analysis` needs no Prefect (the CLI can call it directly); `analyze_qkv_flow` wraps it
and publishes the mean similarities as a markdown artifact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from dreamrelation.config import PipelineConfig
from dreamrelation.data.previews import format_sig
from dreamrelation.model.analysis import PAIRS, analyze_qkv
from dreamrelation.model.config import BaseModelConfig

DEFAULT_OUT_DIR = ".dreamrelation/analysis/qkv"
JSON_FILE = "qkv_similarity.json"
PNG_FILE = "qkv_similarity.png"


def qkv_analysis(
    model_dir: str | Path | None = None,
    rank: int = 16,
    out_dir: str | Path = DEFAULT_OUT_DIR,
    device: str = "cpu",
    model: BaseModelConfig | None = None,
) -> dict[str, Any]:
    """Analyze a Mochi or Wan transformer's Q/K/V weights; writes qkv_similarity.json and .png to `out_dir`.

    `model_dir` is a transformer folder or a pipeline folder with `transformer/`; without it
    the folder of `model` is used (default: the tiny demo model, built on first use).
    Returns {"model_dir", "json", "png", "rank", "num_blocks", "mean", "random_subspace_expectation"}.
    """
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    if model_dir is None:
        from dreamrelation.model.families import resolve_model_dir  # deferred: heavy (diffusers), only without model_dir

        model_dir = resolve_model_dir(model or BaseModelConfig.demo())
    source = Path(model_dir)
    if not source.is_dir():
        raise FileNotFoundError(f"model folder {source} does not exist")
    result = analyze_qkv(source, out_dir, rank=rank, device=device)
    out = Path(out_dir)
    return {
        "model_dir": str(source),
        "json": str(out / JSON_FILE),
        "png": str(out / PNG_FILE),
        "rank": result["rank"],
        "num_blocks": result["num_blocks"],
        "mean": result["mean"],
        "random_subspace_expectation": result["random_subspace_expectation"],
    }


def summary_markdown(summary: dict[str, Any]) -> str:
    """Mean similarity over blocks per stream and pair, as a Markdown table."""
    lines = [
        f"# Q/K/V subspace similarity (r = {summary['rank']}, {summary['num_blocks']} blocks)",
        "",
        f"Model: `{summary['model_dir']}`; heatmap: `{summary['png']}`; per block: `{summary['json']}`.",
        "",
        "| Stream | " + " | ".join(pair.upper() for pair in PAIRS) + " | random r/d |",
        "|---|" + "---:|" * (len(PAIRS) + 1),
    ]
    for stream, means in summary["mean"].items():
        cells = [format_sig(means[pair]) for pair in PAIRS]
        baseline = summary["random_subspace_expectation"].get(stream)
        cells.append(format_sig(baseline))
        lines.append(f"| {stream} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@flow(name="analyze-qkv", log_prints=True)
def analyze_qkv_flow(
    model_dir: str | None = None,
    rank: int = 16,
    out_dir: str = DEFAULT_OUT_DIR,
    device: str = "cpu",
    config: PipelineConfig = PipelineConfig(),
) -> dict[str, Any]:
    """Subspace similarity of every block's Q, K, V weights (vision and text streams): JSON + heatmap PNG."""
    summary = qkv_analysis(model_dir, rank, out_dir, device, config.model)
    create_markdown_artifact(
        key="qkv-analysis", markdown=summary_markdown(summary), description="Q/K/V subspace similarity (METHOD.md §7)"
    )
    print(f"Q/K/V analysis written to {summary['json']} and {summary['png']}")
    return summary
