"""How much signal RCL's anchors carry in the toy world (issue 21 §1): per relation, the ratio of
the clean latents' dynamics to the noise term's.

RCL's anchor is the dynamics d = s[1:] - s[:-1] of the spatial mean s of v_pred
(`losses.relation_features`, METHOD.md §4). With v_pred ~ z0 - eps, d splits into d(z0), the
relation's motion, and d(eps), noise. Per relation, on clips of the shipped toy base's world
encoded by its VAE (normalized latents), this prints std(d(z0)), std(d(eps)) and their ratio.
A ratio well below 1 means the anchors are mostly noise. Not run in CI.

    .venv/bin/python bench/rcl_signal.py --clips 12
    .venv/bin/python bench/rcl_signal.py --config configs/toy/world-v2.yaml --model-dir <base>/model   # world v2
    ... --size 128x192   # the same world drawn larger (the VAE is convolutional): how the ratio scales

The noise term is sqrt(2 / (h w)) over h x w latent positions whatever the relation, so it halves
when the frame has four times the pixels; `--size` shows what happens to the signal.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from dreamrelation.config import load_toy_config
from dreamrelation.data.world import render_clip, sample_specs
from dreamrelation.model.losses import relation_features
from dreamrelation.model.family import LatentNorm, normalize_latents
from dreamrelation.model.mochi import MOCHI
from dreamrelation.model.pretrain import videos_to_tensor

SHIPPED = Path(__file__).resolve().parents[1] / "toy-base" / "model"


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=12, help="clips per relation")
    parser.add_argument("--model-dir", type=Path, default=SHIPPED)
    parser.add_argument("--config", help="toy config YAML whose world the clips come from (default: ToyConfig())")
    parser.add_argument("--size", help="render the clips at HEIGHTxWIDTH pixels instead of the world's size")
    args = parser.parse_args()
    world = load_toy_config(args.config).pretrain.world
    if args.size:
        height, width = (int(v) for v in args.size.lower().split("x"))
        world = world.model_copy(update={"height": height, "width": width})
    vae = MOCHI.load_vae(args.model_dir)
    norm = LatentNorm.from_config(vae.config)
    g = torch.Generator().manual_seed(0)
    print("| relation | std d(z0) | std d(eps) | ratio |\n|---|---|---|---|")
    for relation in world.relations:
        motion, noise = [], []
        for spec in sample_specs(world, args.clips, [relation], seed=7):
            video = videos_to_tensor(render_clip(spec, world).video[None])
            z0 = normalize_latents(vae.encode(video).latent_dist.mean, norm)[0]
            motion.append(relation_features(z0)[1])
            noise.append(relation_features(torch.randn(z0.shape, generator=g))[1])
        signal, floor = torch.cat(motion).std().item(), torch.cat(noise).std().item()
        print(f"| {relation} | {signal:.4f} | {floor:.4f} | {signal / floor:.3f} |", flush=True)


if __name__ == "__main__":
    main()
