"""Shared fixtures and helpers of the model-layer tests (imported by test_mochi/lora/losses/train/sample).

The tiny models are built once per session under the session's base temp folder
(`ensure_tiny_mochi` is idempotent, so every test module reuses the same folder).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from dreamrelation.model.config import BaseModelConfig, LoraTripletConfig, TrainConfig
from dreamrelation.model.mochi import MOCHI, encode_text
from dreamrelation.model.train import TrainClip

CAPTION = "A man is shaking hands with a woman."


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's tiny Mochi (seed 0) in the diffusers layout."""
    return MOCHI.ensure_tiny(tmp_path_factory.getbasetemp() / "tiny-mochi-seed0", seed=0)


@dataclass
class Text:
    embeds: torch.Tensor  # (L, D) of CAPTION
    mask: torch.Tensor  # (L,)
    empty: tuple[torch.Tensor, torch.Tensor]  # features of ""


@pytest.fixture(scope="module")
def text(tiny_dir: Path) -> Text:
    tokenizer, encoder = MOCHI.load_text_encoder(tiny_dir)
    embeds, mask = encode_text(tokenizer, encoder, [CAPTION, ""])
    return Text(embeds[0], mask[0], (embeds[1], mask[1]))


@pytest.fixture(scope="module")
def vae_config(tiny_dir: Path):
    return MOCHI.load_vae(tiny_dir).config


def make_clips(
    text: Text, n: int = 2, shape: tuple[int, int, int] = (3, 4, 4), seed: int = 0, channels: int = 12
) -> list[TrainClip]:
    """Random clips (12 latent channels: Mochi; 16: Wan) with random (binary-ish) subject masks and
    their union as relation mask."""
    f, h, w = shape
    g = torch.Generator().manual_seed(seed)
    clips = []
    for i in range(n):
        s1 = (torch.rand(f, h, w, generator=g) > 0.6).float()
        s2 = (torch.rand(f, h, w, generator=g) > 0.6).float()
        masks = torch.stack([s1, s2, torch.maximum(s1, s2)], dim=1)
        clips.append(
            TrainClip(
                clip_id=f"clip{i}",
                latent_mean=torch.randn(channels, f, h, w, generator=g),
                latent_logvar=torch.full((channels, f, h, w), -4.0),
                text_embeds=text.embeds,
                text_mask=text.mask,
                latent_masks=masks,
            )
        )
    return clips


def tiny_train_config(**update) -> TrainConfig:
    """A fast TrainConfig for the tiny model: rank 4, no periodic samples, no checkpointing of activations."""
    cfg = TrainConfig(
        steps=6,
        lr=1e-2,
        warmup_steps=2,
        checkpoint_every=3,
        keep_last=2,
        sample_every=0,
        gradient_checkpointing=False,
        n_neg=4,
        lora=LoraTripletConfig(rank=4, alpha=8.0),
    )
    return cfg.model_copy(update=update)


def cpu_base(model_dir: Path, family: str = "mochi") -> BaseModelConfig:
    return BaseModelConfig(family=family, profile="demo", model_dir=str(model_dir), device="cpu", dtype="float32")


# --------------------------------------------------------------------------- the convention tests' base


def family_latents(direction: torch.Tensor, batch: int, generator: torch.Generator) -> torch.Tensor:
    """Latents a * U (U = `direction`, a per-channel pattern; a ~ N(0, 1)): a family a tiny DiT learns quickly."""
    return (torch.randn(batch, 1, 1, 1, 1, generator=generator) * direction).expand(batch, direction.shape[0], 3, 4, 4)


def train_denoiser(model: torch.nn.Module, direction: torch.Tensor, steps: int, step_loss) -> None:
    """`steps` seeded AdamW steps (lr 5e-3, batch 8) on `step_loss(model, z0, eps, s)`, in which each
    convention test spells out its base's convention independently of the code under test."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        z0 = family_latents(direction, 8, g)
        eps = torch.randn(z0.shape, generator=g)
        s = torch.rand(8, generator=g)
        step_loss(model, z0, eps, s).backward()
        optimizer.step()
        optimizer.zero_grad()
