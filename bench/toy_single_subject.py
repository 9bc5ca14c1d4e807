"""Is a kind word learnable by the toy DiT at all, without binding? (docs/study.md §5, next tests)

The two-subject captions ask the DiT to bind each noun to one of two blobs. This diagnostic takes
binding away: the world's clips with only the actor drawn (it still moves as in its relation, the
other subject is invisible) and captions naming only it ("A dark red triangle."). It encodes them
with the base's VAE and frozen T5, trains a fresh DiT of the base's shape and settings on them,
generates from held-out single-subject prompts and judges the kind of the drawn subject. If the
DiT learns the kinds here, binding is the obstacle in the two-subject world; if not, the kind
words themselves are (too little loss to gain from them at this size and step count).

A diagnostic, not a base. Resumable; ~8 min encoding + ~9 min DiT steps + ~2 min generations on
2 cores. `--steps` shortens or lengthens the DiT phase.

    .venv/bin/python bench/toy_single_subject.py       # the default ToyConfig's base
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import numpy as np
import torch

from dreamrelation.config import load_toy_config
from dreamrelation.data.world import KINDS, ClipSpec, render_clip, sample_specs
from dreamrelation.model.mochi import MOCHI
from dreamrelation.model.pretrain import (
    DitData,
    build_models,
    decode_clips,
    encode_clips,
    encode_training_set,
    train_dit,
)
from dreamrelation.model.sample import generate
from dreamrelation.perception.judge import judge_video
from dreamrelation.plan import plan_toy
from dreamrelation.stages.pretrain import MODEL_DIR


def single_caption(spec: ClipSpec) -> str:
    """'A dark red triangle.': the actor's phrase only."""
    phrase = spec.subjects[0].phrase()
    return f"{'An' if phrase[0] in 'aeiou' else 'A'} {phrase}."


def kind_rate(videos, specs) -> tuple[float, collections.Counter]:
    """Fraction of videos whose judged subject of the prompted contrast has the prompted kind."""
    ok, confusions = 0, collections.Counter()
    for video, spec in zip(videos, specs):
        wanted = spec.subjects[0]
        judged = [s for s in judge_video(video).subjects if s.contrast == wanted.contrast]
        got = max(judged, key=lambda s: s.found).kind if judged else "none"
        ok += got == wanted.kind
        if got != wanted.kind:
            confusions[f"{wanted.kind}->{got}"] += 1
    return ok / len(specs), confusions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-s", "--set", dest="overrides", action="append", default=[],
                        help="toy config override key.path=value, as for `dreamrelation pretrain` (repeatable)")
    parser.add_argument("--steps", type=int, default=None, help="DiT steps (default: the base's)")
    parser.add_argument("--prompts", type=int, default=30, help="held-out single-subject prompts generated")
    args = parser.parse_args()
    config = load_toy_config(None, args.overrides)
    cfg = config.pretrain
    if args.steps is not None:
        cfg = cfg.model_copy(update={"dit": cfg.dit.model_copy(update={"steps": args.steps})})
    base = Path(config.root) / plan_toy(config)["pretrain_base"].key
    out = Path(config.root) / "experiments" / f"single-subject-{base.name}"
    out.mkdir(parents=True, exist_ok=True)
    pipe = MOCHI.load_pipeline(base / MODEL_DIR)

    cache = out / "dit_data.pt"
    if cache.is_file():
        data = DitData(**torch.load(cache, weights_only=False))
    else:
        specs = sample_specs(cfg.world, cfg.dit.clips, relations=cfg.seen_relations, seed=cfg.seed + 5)
        videos = np.stack([render_clip(s, cfg.world, drawn=(0,)).video for s in specs])
        data = encode_training_set(pipe.vae, pipe.tokenizer, pipe.text_encoder, videos,
                                   [single_caption(s) for s in specs])
        torch.save(vars(data), cache)
    _, transformer, _, _ = build_models(cfg)
    run_dir = out / f"dit-{cfg.dit.steps}-steps"
    run_dir.mkdir(exist_ok=True)
    run = train_dit(transformer, data, cfg, run_dir)
    print(f"single-subject DiT: {run.steps} steps (resumed at {run.resumed_from}); "
          f"final loss {np.mean([v for _, v in run.losses[-10:]]):.3f}")

    held_out = sample_specs(cfg.world, args.prompts, relations=cfg.seen_relations, seed=cfg.seed + 7919)
    clean = [render_clip(s, cfg.world, drawn=(0,)).video for s in held_out]
    with torch.no_grad():
        recon = decode_clips(pipe.vae, encode_clips(pipe.vae, np.stack(clean)))
        pipe.transformer = transformer
        sample = cfg.gates.sample
        generated = [generate(pipe, single_caption(s), sample.model_copy(update={"seed": sample.seed + i}))
                     for i, s in enumerate(held_out)]
    print(f"kind of the one subject (chance 1/{len(KINDS)}), {len(held_out)} held-out prompts:")
    for name, videos in (("clean clips", clean), ("VAE reconstructions", recon), ("generations", generated)):
        rate, confusions = kind_rate(videos, held_out)
        print(f"  {name:20s} {rate:.3f}  commonest confusions {confusions.most_common(4)}")


if __name__ == "__main__":
    main()
