"""How far a short DreamRelation run lifts relation accuracy above the shipped toy base (issue 22 §4).

Meant to set, from measured spread, the margin of the "training teaches" test (not written:
on today's base no setting lifts accuracy beyond the spread; docs/toy_world.md). For each training
seed: DreamRelation (the study's training, `--steps` steps) on 20 exemplars of people pushing,
then the toy judge on two held-out prompt sets, each against the base on the same prompts and
sampling seeds:

- `people`: new clips of people pushing (new positions, colours, sizes; not the exemplars);
- `others`: pushing between subjects that are not people (the study's prompts).

Prints per seed the accuracies and the lift (trained - base), then mean and std over seeds.
Runs go through `stages.study.run_one`, the study's own code path. Not run in CI.

    .venv/bin/python bench/training_teaches.py --steps 150 --seeds 0,1,2,3,4 --prompts 12
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from dreamrelation.config import ToyConfig
from dreamrelation.data.world import KINDS, sample_specs
from dreamrelation.stages.study import exemplar_clips, exemplar_specs, run_one

SHIPPED = Path(__file__).resolve().parents[1] / "toy-base" / "model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="training steps of each DreamRelation run")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the study's)")
    parser.add_argument("--rank", type=int, default=None, help="LoRA rank (default: the study's)")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="training (and sampling) seeds")
    parser.add_argument("--prompts", type=int, default=12, help="held-out prompts per set")
    parser.add_argument("--relation", default="push", help="target relation (one the base never saw)")
    parser.add_argument("--methods", default="dreamrelation", help="tuned methods, each against the base")
    parser.add_argument("--sets", default="people,others", help="held-out prompt sets: people, others")
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--model-dir", type=Path, default=SHIPPED)
    args = parser.parse_args()

    toy = ToyConfig()
    world = toy.pretrain.world
    study = toy.study.model_copy(update={
        "prompts": args.prompts, "strip_prompts": 0,
        "train": toy.study.train.model_copy(update={
            "steps": args.steps, "checkpoint_every": args.steps, "lr": args.lr or toy.study.train.lr,
            "lora": toy.study.train.lora.model_copy(update={"rank": args.rank or toy.study.train.lora.rank,
                                                            "alpha": args.rank or toy.study.train.lora.alpha}),
        }),
    })
    seeds = [int(s) for s in args.seeds.split(",")]
    training = exemplar_clips(exemplar_specs(study, world, args.relation), world, args.model_dir)
    prompt_sets = {
        "people": sample_specs(world, args.prompts, [args.relation], ["person"], seed=study.seed + 303),
        "others": sample_specs(world, args.prompts, [args.relation], [k for k in KINDS if k != "person"],
                               seed=study.seed + 202),
    }
    methods = args.methods.split(",")
    sets = {name: prompt_sets[name] for name in args.sets.split(",")}
    lifts: dict[tuple[str, str], list[float]] = {(s, m): [] for s in sets for m in methods}
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        print(f"{args.relation}, {args.steps} steps, lr {study.train.lr:g}, rank {study.train.lora.rank}, {args.prompts} prompts per set, base {args.model_dir}")
        print("| seed | prompts | method | base | tuned | lift | judged as (tuned) |\n|---|---|---|---|---|---|---|")
        for seed in seeds:
            for name, prompts in sets.items():
                base = run_one(study, args.relation, "base", seed, args.model_dir, out / name, training, prompts, world)
                for method in methods:
                    run = run_one(study, args.relation, method, seed, args.model_dir, out / name, training, prompts, world)
                    lift = run["relation_accuracy"] - base["relation_accuracy"]
                    lifts[(name, method)].append(lift)
                    seen = Counter(str(v["judged"]) for v in run["videos"]).most_common(3)
                    print(f"| {seed} | {name} | {method} | {base['relation_accuracy']:.3f} | "
                          f"{run['relation_accuracy']:.3f} | {lift:+.3f} | {seen} |", flush=True)
    for (name, method), values in lifts.items():
        print(f"{name} {method}: lift {np.mean(values):+.3f} ± {np.std(values):.3f} "
              f"(min {min(values):+.3f}) over {len(values)} seeds")


if __name__ == "__main__":
    main()
