"""Base model: tiny demo models, local loading, encoding helpers (METHOD.md §1)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLMochi, FlowMatchEulerDiscreteScheduler, MochiPipeline, MochiTransformer3DModel
from transformers import T5EncoderModel

from dreamrelation.model import families, family
from dreamrelation.model.mochi import MOCHI
from dreamrelation.model.config import BaseModelConfig


def test_tiny_model_has_the_diffusers_layout_and_loads_through_the_pipeline(tiny_dir: Path) -> None:
    for name in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler", "model_index.json"):
        assert (tiny_dir / name).exists(), name
    pipe = MochiPipeline.from_pretrained(tiny_dir, local_files_only=True)
    assert isinstance(pipe.transformer, MochiTransformer3DModel)
    assert isinstance(pipe.vae, AutoencoderKLMochi)
    assert isinstance(pipe.text_encoder, T5EncoderModel)
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler) and pipe.scheduler.config.invert_sigmas
    # METHOD.md §1 constraints of the tiny configs
    assert pipe.vae.config.latent_channels == 12
    assert pipe.vae.spatial_compression_ratio == 8 and pipe.vae.temporal_compression_ratio == 6
    assert pipe.transformer.config.text_embed_dim == pipe.text_encoder.config.d_model
    assert pipe.transformer.config.attention_head_dim % 2 == 0
    assert pipe.transformer.pos_frequencies.abs().sum() > 0  # not the zeros of a fresh model


def test_tiny_build_is_deterministic_and_idempotent(tmp_path: Path, tiny_dir: Path) -> None:
    marker = tiny_dir / "model_index.json"
    before = marker.stat().st_mtime_ns
    assert MOCHI.ensure_tiny(tiny_dir) == tiny_dir
    assert marker.stat().st_mtime_ns == before  # not rebuilt
    other = MOCHI.build_tiny(tmp_path / "again", seed=0)
    a = MOCHI.load_transformer(tiny_dir).state_dict()
    b = MOCHI.load_transformer(other).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list(tmp_path.glob(".again.tmp-*"))  # the temporary build folder is gone


def _half_download(tiny_dir: Path, folder: Path) -> bytes:
    """A copy of the tiny model without vae/ (a half-finished download) holding a user's file."""
    shutil.copytree(tiny_dir, folder)
    shutil.rmtree(folder / "vae")
    sentinel = b"the user's own notes, not a model file\n"
    (folder / "NOTES.txt").write_bytes(sentinel)
    return sentinel


def test_an_incomplete_folder_is_never_built_into_or_replaced(tmp_path: Path, tiny_dir: Path) -> None:
    partial = tmp_path / "partial"
    sentinel = _half_download(tiny_dir, partial)
    assert family.missing_components(partial) == ["vae/config.json", "vae/ weights (*.safetensors)"]
    for build in (MOCHI.ensure_tiny, MOCHI.build_tiny):
        with pytest.raises(family.ModelFolderError, match="left untouched"):
            build(partial)
        assert (partial / "NOTES.txt").read_bytes() == sentinel
        assert not (partial / "vae").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".partial")]  # no build leftovers


def test_demo_profile_with_a_user_model_dir_reads_it_and_never_writes(
    tmp_path: Path, tiny_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "mochi-1-preview"
    sentinel = _half_download(tiny_dir, folder)
    cfg = BaseModelConfig(profile="demo", model_dir=str(folder), models_cache=str(tmp_path / "cache"))
    with pytest.raises(family.ModelFolderError, match=r"missing: vae/config.json"):
        families.resolve_model_dir(cfg)
    assert (folder / "NOTES.txt").read_bytes() == sentinel and not (folder / "vae").exists()
    assert not (tmp_path / "cache").exists()
    # a complete folder is used as it is, with a warning that points at the real profile
    with caplog.at_level("WARNING", logger="dreamrelation.model"):
        assert families.resolve_model_dir(cfg.model_copy(update={"model_dir": str(tiny_dir)})) == tiny_dir
    assert "-c mochi-1" in caplog.text


def test_missing_model_folder_error_names_what_and_how(tmp_path: Path, tiny_dir: Path) -> None:
    folder = tmp_path / "mochi"
    shutil.copytree(tiny_dir, folder)
    shutil.rmtree(folder / "text_encoder")
    cfg = BaseModelConfig(profile="mochi-1", model_dir=str(folder))
    with pytest.raises(family.ModelFolderError) as err:
        families.resolve_model_dir(cfg)
    message = str(err.value)
    assert "text_encoder/config.json" in message
    assert f"huggingface-cli download genmo/mochi-1-preview --local-dir {folder}" in message
    with pytest.raises(family.ModelFolderError, match="needs model_dir"):
        families.resolve_model_dir(BaseModelConfig(profile="mochi-1", models_cache=str(tmp_path / "empty")))
    with pytest.raises(family.ModelFolderError):
        MOCHI.load_transformer(tmp_path / "nothing")
    assert families.resolve_model_dir(BaseModelConfig(profile="mochi-1", model_dir=str(tiny_dir))) == tiny_dir


def test_demo_profile_builds_under_the_models_cache(tmp_path: Path) -> None:
    folder = families.resolve_model_dir(BaseModelConfig(models_cache=str(tmp_path), tiny_seed=3))
    assert folder == MOCHI.tiny_dir(tmp_path, 3) and not family.missing_components(folder)


def test_device_and_dtype_resolution() -> None:
    cpu = torch.device("cpu")
    assert family.resolve_device(BaseModelConfig(device="cpu")) == cpu
    assert family.resolve_dtype(BaseModelConfig(), cpu) == torch.float32
    assert family.resolve_dtype(BaseModelConfig(), torch.device("cuda")) == torch.bfloat16
    assert family.resolve_dtype(BaseModelConfig(dtype="bfloat16"), cpu) == torch.bfloat16


def test_encode_text_is_exactly_what_the_pipeline_feeds_the_transformer(tiny_dir: Path) -> None:
    tokenizer, encoder = MOCHI.load_text_encoder(tiny_dir)
    prompts = ["A bear is shaking hands with a raccoon in a meadow.", ""]
    embeds, mask = MOCHI.encode_text(tokenizer, encoder, prompts, MOCHI.max_text_length)
    pipe = MOCHI.load_pipeline(tiny_dir)
    with torch.no_grad():  # as inside MochiPipeline.__call__
        ref_embeds, ref_mask, _, _ = pipe.encode_prompt(prompts, do_classifier_free_guidance=False)
    assert embeds.shape == (2, 256, encoder.config.d_model) and mask.dtype == torch.bool
    assert torch.equal(embeds, ref_embeds) and torch.equal(mask, ref_mask)
    assert mask[1].sum() == 1  # "" is just </s>


def test_encode_video_and_latent_normalization(tiny_dir: Path, vae_config) -> None:
    vae = MOCHI.load_vae(tiny_dir)
    video = torch.rand(1, 3, 13, 32, 48) * 2 - 1
    mean, logvar = MOCHI.encode_video(vae, video)
    assert mean.shape == logvar.shape == (1, 12, 3, 4, 6)  # f = (13 - 1) / 6 + 1, 8x spatial

    z = family.normalize_latents(mean, vae_config)
    c = 7
    expected = (mean[0, c] - vae_config.latents_mean[c]) / vae_config.latents_std[c] * vae_config.scaling_factor
    assert torch.allclose(z[0, c], expected)
    # MochiPipeline's own un-normalization before decoding inverts it
    std = torch.tensor(vae_config.latents_std).view(1, 12, 1, 1, 1)
    mu = torch.tensor(vae_config.latents_mean).view(1, 12, 1, 1, 1)
    assert torch.allclose(z * std / vae_config.scaling_factor + mu, mean, atol=1e-6)
    assert torch.allclose(family.denormalize_latents(z, vae_config), mean, atol=1e-6)
    # unbatched (C, f, h, w) and a plain mapping (as stored in zarr attrs) work the same
    norm = family.LatentNorm.from_config(dict(vae_config))
    assert torch.allclose(family.normalize_latents(mean[0], norm), z[0])
