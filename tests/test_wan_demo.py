"""`-c wan-demo`: the whole DAG on a tiny Wan 2.1, through the Prefect flows (issue 23 §3)."""

from __future__ import annotations

import json
from pathlib import Path

import zarr
from safetensors import safe_open

from dreamrelation.config import load_config
from dreamrelation.plan import plan_relation


def test_wan_demo_runs_every_stage_on_wan_shapes(prefect_harness, synthetic_root: Path, tmp_path: Path,
                                                 tmp_path_factory) -> None:
    from dreamrelation.flows.pipeline import relation_pipeline

    config = load_config("wan-demo", [
        f"root={tmp_path / 'artifacts'}", "synthetic=null", f"select.dataset_root={synthetic_root}",
        "select.clips_per_relation=3", f"model.models_cache={tmp_path_factory.getbasetemp() / 'models'}",
        "train.steps=3", "train.checkpoint_every=3", "train.sample_every=0", "evaluate.prompts_per_relation=1",
        "evaluate.fvd.reference_videos_dir=null",  # the preset's is the demo dataset, not generated here
    ])
    results = relation_pipeline(relation="A058", config=config)
    assert [r.stage for r in results] == ["select_clips", "write_captions", "encode_latents", "make_masks",
                                          "train_relation", "evaluate"]
    plan = plan_relation("A058", config)
    root = tmp_path / "artifacts"

    latents = zarr.open_group(str(root / plan["encode_latents"].key / "latents.zarr"), mode="r")
    n = latents.attrs["summary"]["ok"]
    assert n == 3 and latents["mean"].shape == (3, 16, 7, 12, 20)  # Wan VAE: 16 channels, 25 frames -> 7
    text = zarr.open_group(str(root / plan["encode_latents"].key / "text.zarr"), mode="r")
    assert text["embeds"].shape[1] == 512 and text.attrs["text_encoder"] == "UMT5EncoderModel"
    masks = zarr.open_group(str(root / plan["make_masks"].key / "masks.zarr"), mode="r")
    assert masks["latent"].shape[1:] == (7, 3, 12, 20)  # T_c = 4, on the latents' grid

    run = root / plan["train_relation"].key
    with safe_open(str(run / "relation_lora.safetensors"), "pt") as handle:
        keys = list(handle.keys())
    assert keys and all(k.startswith("transformer.blocks.") and ".attn1." in k for k in keys)
    evaluation = json.loads((root / plan["evaluate"].key / "results.json").read_text())
    assert [m["name"] for m in evaluation["methods"]] == ["DreamRelation", "Wan (base)"]
    assert all(m["videos"] for m in evaluation["methods"])
