"""Does a trained relation LoRA fit the exemplars? Paired flow loss against the base (issue 22 §4).

Relation accuracy from the toy judge is noisy at a dozen prompts; the flow loss on fixed
(clip, noise level, noise) draws is not: the same draws go through the base and through the base
with a run's inference LoRA (`relation_lora.safetensors`, METHOD.md §5), and the script prints
the mean loss of each and the paired difference with its standard error, on the 20 exemplars of
people pushing the run was trained on and on 8 new clips of people pushing. Not run in CI.

    .venv/bin/python bench/paired_loss.py RUN_DIR [RUN_DIR ...]   # run folders of bench/training_teaches.py --out
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from dreamrelation.config import ToyConfig
from dreamrelation.data.world import sample_specs
from dreamrelation.model.family import normalize_latents
from dreamrelation.model.sample import load_inference_pipeline
from dreamrelation.model.mochi import MOCHI, flow_target, timestep_from_noise_level
from dreamrelation.model.train import TrainClip, add_noise
from dreamrelation.stages.study import exemplar_clips, exemplar_specs

SHIPPED = Path(__file__).resolve().parents[1] / "toy-base" / "model"


@torch.no_grad()
def flow_losses(transformer: torch.nn.Module, clips: list[TrainClip], norm, draws: int) -> torch.Tensor:
    """Per-draw MSE of v_pred against z0 - eps (METHOD.md §1), noise levels in [0.1, 0.9], seed 0."""
    g = torch.Generator().manual_seed(0)
    losses = []
    for clip in clips:
        z0 = normalize_latents(clip.latent_mean.float(), norm).unsqueeze(0)
        for _ in range(draws):
            s = 0.1 + 0.8 * torch.rand((1,), generator=g)
            eps = torch.randn(z0.shape, generator=g)
            v = transformer(hidden_states=add_noise(z0, eps, s), encoder_hidden_states=clip.text_embeds[None],
                            timestep=timestep_from_noise_level(s), encoder_attention_mask=clip.text_mask[None].bool(),
                            return_dict=False)[0]
            losses.append(float(((v - flow_target(z0, eps)) ** 2).mean()))
    return torch.tensor(losses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="training run folders holding relation_lora.safetensors")
    parser.add_argument("--relation", default="push")
    parser.add_argument("--draws", type=int, default=6, help="noise draws per clip")
    parser.add_argument("--model-dir", type=Path, default=SHIPPED)
    args = parser.parse_args()
    toy = ToyConfig()
    world = toy.pretrain.world
    sets = {
        "exemplars": exemplar_clips(exemplar_specs(toy.study, world, args.relation), world, args.model_dir),
        "new people": exemplar_clips(sample_specs(world, 8, [args.relation], ["person"], seed=303), world, args.model_dir),
    }
    base = load_inference_pipeline(MOCHI, args.model_dir, None).transformer
    reference = {name: flow_losses(base, clips, norm, args.draws) for name, (clips, _, norm) in sets.items()}
    print("| run | clips | base loss | LoRA loss | paired difference |\n|---|---|---|---|---|")
    for run in args.runs:
        tuned = load_inference_pipeline(MOCHI, args.model_dir, run / "relation_lora.safetensors").transformer
        for name, (clips, _, norm) in sets.items():
            diff = flow_losses(tuned, clips, norm, args.draws) - reference[name]
            print(f"| {run} | {name} | {reference[name].mean():.4f} | {(reference[name] + diff).mean():.4f} | "
                  f"{diff.mean():+.4f} ± {diff.std() / len(diff) ** 0.5:.4f} |", flush=True)


if __name__ == "__main__":
    main()
