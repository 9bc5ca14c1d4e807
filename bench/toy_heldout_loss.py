"""Is a toy base underfit or overfit? Its flow loss on training clips against fresh clips (docs/study.md R13).

For each base folder: the rectified-flow loss (METHOD.md §1) of its DiT on the first `--clips` of its
own encoded training set and on as many freshly rendered clips of the same relations, at fixed noise
levels s with the same noise per s for both sets. Two columns per set: the mean over all latent
cells, and the mean over the subjects' cells (weighted by the latent relation mask R of METHOD.md §3,
any-coverage, T_c-averaged), where the body and scale gates are decided. The last line per base is
the mean of the fresh subject column over the noise levels: the metric R13's lr sweep ranked by.
Not run in CI; about 2 min per base on 2 cores.

    .venv/bin/python bench/toy_heldout_loss.py -c configs/toy/world-v2-12k.yaml \
        .dreamrelation/toy/base/toy-64c2c7567ba12e75
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from dreamrelation.config import ConfigError, load_toy_config
from dreamrelation.model.family import normalize_latents
from dreamrelation.model.joint_attention import batched_joint_attention, trim_text_padding
from dreamrelation.model.mochi import MOCHI, encode_text, flow_target, timestep_from_noise_level
from dreamrelation.model.pretrain import clip_relation_masks, encode_clips, render_set, training_clips
from dreamrelation.model.train import add_noise

NOISE_LEVELS = (0.2, 0.4, 0.6, 0.8, 0.95)
FRESH_PHASE = 77  # a render_set phase no pretraining phase uses (they use 1-5)


@torch.no_grad()
def losses(transformer, latents, embeds, masks, subjects, s_value: float, batch: int = 16) -> tuple[float, float]:
    """(all cells, subjects' cells) flow loss at noise level `s_value`: the mean squared error over every
    latent cell, and its R-weighted mean sum(e R) / sum(R) over the set. The noise is seeded by s."""
    g = torch.Generator().manual_seed(int(s_value * 100))
    total, weighted, weight = 0.0, 0.0, 0.0
    for i in range(0, len(latents), batch):
        z0 = latents[i : i + batch]
        eps = torch.randn(z0.shape, generator=g)
        s = torch.full((len(z0),), s_value)
        text, text_mask = trim_text_padding(embeds[i : i + batch], masks[i : i + batch])
        v = transformer(hidden_states=add_noise(z0, eps, s), encoder_hidden_states=text,
                        timestep=timestep_from_noise_level(s), encoder_attention_mask=text_mask, return_dict=False)[0]
        error = ((v - flow_target(z0, eps)) ** 2).mean(dim=1)  # (B, f, h, w)
        r = subjects[i : i + batch]
        total += error.mean(dim=(1, 2, 3)).sum().item()
        weighted, weight = weighted + (error * r).sum().item(), weight + r.sum().item()
    return total / len(latents), weighted / weight


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bases", nargs="+", type=Path, help="base folders (each with model/ and work/dit_data.pt)")
    parser.add_argument("-c", "--config", required=True, help="the toy config the bases were trained from")
    parser.add_argument("--clips", type=int, default=192, help="clips per set")
    args = parser.parse_args()
    missing = [str(b) for b in args.bases if not (b / "work" / "dit_data.pt").is_file() or not (b / "model").is_dir()]
    if missing:
        sys.exit(f"not a finished toy base folder (needs model/ and work/dit_data.pt): {', '.join(missing)}")
    try:
        cfg = load_toy_config(args.config).pretrain
    except ConfigError as exc:
        sys.exit(str(exc))
    torch.set_num_threads(2)
    fresh = render_set(cfg, args.clips, cfg.seen_relations, phase=FRESH_PHASE)
    train = training_clips(cfg)[: args.clips]
    for base in args.bases:
        data = torch.load(base / "work" / "dit_data.pt", weights_only=False)
        if data["captions"][: args.clips] != [c.caption for c in train]:
            sys.exit(f"{base}: its training set is not {args.config}'s clips")
        pipe = MOCHI.load_pipeline(str(base / "model"))
        with torch.no_grad():
            fresh_latents = normalize_latents(encode_clips(pipe.vae, np.stack([c.video for c in fresh])), pipe.vae.config)
            fresh_embeds, fresh_masks = encode_text(pipe.tokenizer, pipe.text_encoder, [c.caption for c in fresh])
        sets = {
            "train": (data["latents"][: args.clips], data["embeds"][: args.clips], data["masks"][: args.clips],
                      clip_relation_masks(train)),
            "fresh": (fresh_latents, fresh_embeds, fresh_masks, clip_relation_masks(fresh)),
        }
        print(f"\n{base.name}: flow loss, all cells / subjects' cells")
        print("| s | train | fresh |\n|---|---|---|")
        fresh_subjects = []
        transformer = pipe.transformer.eval()
        with batched_joint_attention(transformer):
            for s_value in NOISE_LEVELS:
                row = {name: losses(transformer, *tensors, s_value) for name, tensors in sets.items()}
                fresh_subjects.append(row["fresh"][1])
                print(f"| {s_value} | " + " | ".join(f"{a:.3f} / {b:.3f}" for a, b in row.values()) + " |", flush=True)
        print(f"mean fresh subjects' loss over s: {np.mean(fresh_subjects):.3f}")


if __name__ == "__main__":
    main()
