"""Wan 2.1's conventions, checked against diffusers before the pipeline trains on Wan (issue 23 §1).

METHOD.md §9 states them from the source; these tests measure them on a tiny `WanPipeline` of
the real classes, as tests/test_train.py does for Mochi (METHOD.md §1).
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel

from dreamrelation.data.masks import latent_masks
from dreamrelation.model.train import add_noise
from dreamrelation.model.wan import WAN

TINY_WAN = dict(num_attention_heads=2, attention_head_dim=8, num_layers=1, ffn_dim=32, text_dim=16, freq_dim=16,
                rope_max_seq_len=32)


def test_wan_pipeline_trajectory_is_the_training_noising_with_t_1000_sigma_and_target_eps_minus_z0() -> None:
    """Feed `WanPipeline` the exact velocity of a known pair as the training computes it (`WAN.flow_target`:
    eps - z0). Every (x_i, t_i) it gives
    the transformer must be x = (1 - sigma) z0 + sigma eps (the same noising as on Mochi) at
    sigma = t_i / 1000 (to the scheduler's integer timestep: t = 1000 is pure noise, the
    opposite of Mochi's t = 1000 (1 - sigma)), and the result must be z0."""
    transformer = WanTransformer3DModel(**TINY_WAN)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer, scheduler=scheduler)
    g = torch.Generator().manual_seed(0)
    z0, eps = torch.randn(1, 16, 3, 4, 4, generator=g), torch.randn(1, 16, 3, 4, 4, generator=g)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    transformer.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((kwargs["hidden_states"].clone(), kwargs["timestep"].clone())),
        with_kwargs=True,
    )
    transformer.register_forward_hook(lambda module, args, kwargs, output: (WAN.flow_target(z0, eps),), with_kwargs=True)
    out = pipe(prompt_embeds=torch.randn(1, 5, 16), latents=eps, height=32, width=32, num_frames=9,
               num_inference_steps=8, guidance_scale=1.0, output_type="latent").frames

    assert len(seen) == 8 and seen[0][1].item() == 999  # pure noise first, at t ~ 1000
    for (x, t), sigma in zip(seen, pipe.scheduler.sigmas):
        assert 0 <= WAN.timestep(sigma).item() - t.item() < 1  # the training's t = 1000 sigma, truncated by the pipeline
        assert torch.allclose(x, add_noise(z0, eps, sigma.reshape(1)), atol=1e-5), f"t={t.item()}"
        assert not torch.allclose(x, add_noise(z0, eps, 1 - sigma.reshape(1)), atol=1e-2)  # not Mochi's t
    assert torch.allclose(out, z0, atol=1e-5)


def test_wan_latent_masks_average_four_frames_81_to_21_by_hand() -> None:
    """T_c = 4 on Wan: latent frame 0 <- frame 0, frame i >= 1 <- mean of frames 4i-3 .. 4i."""
    masks = np.zeros((81, 2, 16, 16), dtype=bool)
    masks[0, 0, :8, :8] = True  # subject 1 in the first frame only
    masks[1:3, 1, 8:, 8:] = True  # subject 2 in frames 1 and 2 (half of latent frame 1)
    masks[77:81, 0, 8:, :8] = True  # subject 1 in the last four frames (all of latent frame 20)
    latent = latent_masks(masks, temporal_compression=4)
    assert latent.shape == (21, 3, 2, 2)
    assert latent[0, 0, 0, 0] == 1.0 and latent[0, 0].sum() == 1.0
    assert latent[1, 1, 1, 1] == 0.5 and latent[1, 1].sum() == 0.5
    assert latent[20, 0, 1, 0] == 1.0 and latent[20, 0].sum() == 1.0
    assert latent[1, 2, 1, 1] == 0.5 and latent[20, 2, 1, 0] == 1.0  # R: the union
    assert latent[2:20].sum() == 0.0
