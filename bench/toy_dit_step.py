"""Toy-base DiT training step: stock Mochi joint attention vs the exact faster path (model.joint_attention).

Three ways to run the same forward + backward of the toy base's default DiT on a batch of
toy-world-shaped inputs (16 clips, latents 12 x 5 x 8 x 12, captions of 13 tokens padded to 256):

- stock:    diffusers' MochiAttnProcessor2_0, caption features padded to 256 tokens
- trimmed:  the stock processor, caption features cut to the longest caption (`trim_text_padding`)
- batched:  trimmed, and `BatchedMochiAttnProcessor` (one masked attention call per layer)

Steps are interleaved (stock, trimmed, batched, stock, ...) so load changes on a shared machine
hit all three alike; the outputs are checked to be equal first. Prints median step times and the
speed-ups over stock.

    .venv/bin/python bench/toy_dit_step.py [--steps 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dreamrelation.config import load_toy_config
from dreamrelation.model.joint_attention import batched_joint_attention, trim_text_padding
from dreamrelation.model.pretrain import build_models
from dreamrelation.model.mochi import flow_target, timestep_from_noise_level
from dreamrelation.model.train import add_noise

BATCH, CAPTION_TOKENS, PADDED = 16, 13, 256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=15, help="timed steps per variant")
    args = parser.parse_args()
    cfg = load_toy_config(None, []).pretrain
    _, transformer, _, _ = build_models(cfg)
    w = cfg.world
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(BATCH, 12, (w.frames - 1) // 6 + 1, w.height // 8, w.width // 8, generator=g)
    eps = torch.randn(z0.shape, generator=g)
    s = torch.rand(BATCH, generator=g)
    embeds = torch.randn(BATCH, PADDED, transformer.config.text_embed_dim, generator=g)
    mask = torch.zeros(BATCH, PADDED, dtype=torch.bool)
    mask[:, :CAPTION_TOKENS] = True

    def step(text: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        v = transformer(hidden_states=add_noise(z0, eps, s), encoder_hidden_states=text[0],
                        timestep=timestep_from_noise_level(s), encoder_attention_mask=text[1], return_dict=False)[0]
        torch.mean((v - flow_target(z0, eps)) ** 2).backward()
        transformer.zero_grad(set_to_none=True)
        return v.detach()

    padded, trimmed = (embeds, mask), trim_text_padding(embeds, mask)
    reference = step(padded)
    assert torch.allclose(step(trimmed), reference, atol=1e-5)
    with batched_joint_attention(transformer):
        assert torch.allclose(step(trimmed), reference, atol=1e-5)

    times: dict[str, list[float]] = {"stock": [], "trimmed": [], "batched": []}
    for _ in range(args.steps):
        for name in times:
            start = time.perf_counter()
            if name == "batched":
                with batched_joint_attention(transformer):
                    step(trimmed)
            else:
                step(padded if name == "stock" else trimmed)
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}
    for name, value in median.items():
        print(f"{name:8s} {value * 1000:7.1f} ms/step   speed-up over stock {median['stock'] / value:.2f}x")


if __name__ == "__main__":
    main()
