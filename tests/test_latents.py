"""encode_latents through the artifact store, and the training-data loader (METHOD.md §1, §3)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from dreamrelation.data.manifest import ClipRecord, Manifest
from dreamrelation.data.masks import MaskConfig
from dreamrelation.data.store import ArtifactStore
from dreamrelation.data.video import VideoConfig, load_clip, probe_video
from dreamrelation.model.config import BaseModelConfig
from dreamrelation.model.families import resolve_model_dir
from dreamrelation.model.mochi import MOCHI, encode_text
from dreamrelation.stages.latents import (
    LATENTS_STORE,
    TEXT_STORE,
    LatentConfig,
    encode_latents,
    use_vae_tiling,
    video_tensor,
)
from dreamrelation.stages.masks import make_masks
from dreamrelation.stages.training import TooFewClipsError, load_training_clips

VIDEO = VideoConfig(num_frames=7, height=48, width=80, fps=30.0, aspect=80 / 48)
CAPTION = "A person is shaking hands with a person."


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> BaseModelConfig:
    return BaseModelConfig(
        profile="demo", device="cpu", dtype="float32", models_cache=str(tmp_path_factory.mktemp("models"))
    )


@pytest.fixture(scope="module")
def manifest(synthetic_root) -> Manifest:
    """Three good clips, one whose video is missing and one without a caption."""
    root = Path(synthetic_root)
    stamp = json.loads((root / "synthetic_dataset.json").read_text())
    names = [name for name, fault in stamp["clips"] if fault is None and name.endswith("A058")][:4]
    clips = []
    for name in names:
        video = next((root / "nturgb+d_rgb").glob(f"{name}_rgb.*"))
        info = probe_video(video)
        clips.append(
            ClipRecord(
                clip_id=name, relation="A058", video=str(video),
                skeleton=str(root / "nturgb+d_skeletons" / f"{name}.skeleton"),
                frames=info.frames, fps=info.fps, width=info.width, height=info.height, caption=CAPTION,
            )
        )
    clips[1] = clips[1].model_copy(update={"video": str(root / "missing_rgb.avi")})
    clips[2] = clips[2].model_copy(update={"caption": None})
    return Manifest(relation="A058", relation_name="handshaking", dataset_root=str(root), clips=clips)


@pytest.fixture(scope="module")
def latents_uri(tmp_path_factory, manifest, model) -> str:
    store = ArtifactStore(tmp_path_factory.mktemp("artifacts"))
    key = "relations/A058/latents-fp0123"
    with store.write(key, {"stage": "encode_latents"}) as tmp:
        summary = encode_latents(manifest, tmp, VIDEO, model, LatentConfig(batch_size=2), "fp0123")
    assert summary["clips"] == 4 and summary["ok"] == 2 and summary["failed"] == 2
    return store.require(key)


def test_latents_round_trip_with_attributes(latents_uri, manifest, model):
    group = zarr.open_group(f"{latents_uri}/{LATENTS_STORE}", mode="r")
    attrs = group.attrs.asdict()
    assert attrs["fingerprint"] == "fp0123" and attrs["relation"] == "A058"
    assert (attrs["frames"], attrs["height"], attrs["width"]) == (7, 48, 80)
    assert attrs["model"]["profile"] == "demo" and Path(attrs["model"]["model_dir"]).is_dir()
    assert group["mean"].shape == group["logvar"].shape == (4, 12, 2, 6, 10)
    assert group["mean"].chunks == (1, 12, 2, 6, 10)  # one chunk per clip

    model_dir = resolve_model_dir(model)
    vae = MOCHI.load_vae(model_dir)
    assert attrs["vae"]["latents_mean"] == pytest.approx(list(vae.config.latents_mean))
    assert attrs["vae"]["latents_std"] == pytest.approx(list(vae.config.latents_std))
    assert attrs["vae"]["scaling_factor"] == vae.config.scaling_factor

    clip = manifest.clips[0]
    frames = load_clip(clip.video, VIDEO.num_frames, VIDEO.height, VIDEO.width, VIDEO.fps, VIDEO.aspect)
    mean, logvar = MOCHI.encode_video(vae, video_tensor(frames)[None])
    np.testing.assert_allclose(group["mean"][0], mean[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(group["logvar"][0], logvar[0].numpy(), atol=1e-5)

    text = zarr.open_group(f"{latents_uri}/{TEXT_STORE}", mode="r")
    tokenizer, encoder = MOCHI.load_text_encoder(model_dir)
    embeds, mask = encode_text(tokenizer, encoder, [CAPTION, ""], 256)
    assert text["embeds"].shape == (4, 256, 32) and text["mask"].shape == (4, 256)
    np.testing.assert_allclose(text["embeds"][0], embeds[0].numpy(), atol=1e-5)
    np.testing.assert_array_equal(text["mask"][0], mask[0].numpy())
    np.testing.assert_allclose(text["empty_embeds"][...], embeds[1].numpy(), atol=1e-5)
    np.testing.assert_array_equal(text["empty_mask"][...], mask[1].numpy())


def test_failed_clips_are_recorded_and_left_empty(latents_uri):
    group = zarr.open_group(f"{latents_uri}/{LATENTS_STORE}", mode="r")
    records = {r["clip_id"]: r for r in group.attrs["clips"]}
    statuses = [r["status"] for r in group.attrs["clips"]]
    assert statuses == ["ok", "failed", "failed", "ok"]
    reasons = [r["reason"] for r in group.attrs["clips"]]
    assert "missing_rgb.avi" in reasons[1] and "no caption" in reasons[2]
    assert np.isnan(group["mean"][1]).all() and np.isfinite(group["mean"][3]).all()
    assert group.attrs["summary"]["failed"] == 2 and len(records) == 4


def test_training_clips_join_latents_text_and_masks(tmp_path, latents_uri, manifest):
    make_masks(manifest, str(tmp_path), VIDEO, MaskConfig(backend="skeleton-box"))
    data = load_training_clips(latents_uri, str(tmp_path))
    assert [c.clip_id for c in data.clips] == [manifest.clips[0].clip_id, manifest.clips[3].clip_id]
    assert set(data.left_out) == {manifest.clips[1].clip_id, manifest.clips[2].clip_id}
    assert all("latents failed" in reason for reason in data.left_out.values())
    clip = data.clips[0]
    assert clip.latent_mean.shape == clip.latent_logvar.shape == (12, 2, 6, 10)
    assert clip.latent_masks.shape == (2, 3, 6, 10) and clip.latent_masks.dtype == torch.float32
    assert clip.text_embeds.shape == (256, 32) and clip.text_mask.dtype == torch.bool
    assert data.empty_text[0].shape == (256, 32) and data.empty_text[1].sum() >= 1
    assert len(data.vae_norm.latents_mean) == 12
    # two usable clips of four: training refuses to start when it needs more, naming every left-out clip
    with pytest.raises(TooFewClipsError) as err:
        load_training_clips(latents_uri, str(tmp_path), min_clips=3)
    message = str(err.value)
    assert message.startswith("only 2 usable training clip(s), train.min_clips is 3. Left out: ")
    for clip_id, reason in data.left_out.items():
        assert f"{clip_id}: {reason}" in message


def test_masks_on_another_grid_are_refused(tmp_path, latents_uri, manifest):
    other = VideoConfig(num_frames=13, height=48, width=80, fps=30.0, aspect=80 / 48)
    make_masks(manifest, str(tmp_path), other, MaskConfig(backend="skeleton-box"))
    with pytest.raises(ValueError, match="different video settings"):
        load_training_clips(latents_uri, str(tmp_path))


def test_stage_flows_build_then_skip(prefect_harness, tmp_path, synthetic_root, model):
    from dreamrelation.config import PipelineConfig
    from dreamrelation.flows.encode_latents import encode_latents_flow
    from dreamrelation.flows.make_masks import make_masks_flow
    from dreamrelation.flows.select_clips import select_clips_flow
    from dreamrelation.flows.write_captions import write_captions_flow

    config = PipelineConfig(
        root=str(tmp_path / "artifacts"), synthetic=None, video=VIDEO, model=model,
        select={"dataset_root": str(synthetic_root), "clips_per_relation": 2},
    )
    select_clips_flow(relation="A055", config=config)
    write_captions_flow(relation="A055", config=config)
    latents = encode_latents_flow(relation="A055", config=config)
    masks = make_masks_flow(relation="A055", config=config)
    assert not latents.skipped and latents.summary["ok"] == 2
    assert not masks.skipped and masks.summary["ok"] == 2
    assert encode_latents_flow(relation="A055", config=config).skipped
    assert make_masks_flow(relation="A055", config=config).skipped
    assert len(load_training_clips(latents.uri, masks.uri).clips) == 2


def test_vae_tiling_is_chosen_by_clip_size():
    full, demo = VideoConfig(), VideoConfig(num_frames=25, height=96, width=160, aspect=160 / 96)
    auto = LatentConfig()
    assert auto.vae_tiling == "auto"
    assert use_vae_tiling(auto, full)  # 61 x 480 x 848 = 24.8 megapixel-frames > 10
    assert use_vae_tiling(auto, VideoConfig(num_frames=25))  # 10.2 > 10
    assert not use_vae_tiling(auto, VideoConfig(num_frames=19))  # 7.7
    assert not use_vae_tiling(auto, demo) and not use_vae_tiling(auto, VIDEO)
    assert use_vae_tiling(LatentConfig(vae_tiling_above=0.01), VIDEO)  # 7 x 48 x 80 = 0.027
    assert use_vae_tiling(LatentConfig(vae_tiling=True), demo)
    assert not use_vae_tiling(LatentConfig(vae_tiling=False), full)
    with pytest.raises(ValueError):
        LatentConfig(vae_tiling="sometimes")
