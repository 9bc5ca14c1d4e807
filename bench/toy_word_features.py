"""Does the random T5 hide the kind words from the toy DiT? (docs/study.md §5, next tests)

Trains a fresh DiT of the base's shape on the base's encoded clips, but with context-free word
features in place of the frozen random T5: each token id gets one fixed random vector (seeded),
nothing mixes neighbouring words. Then it generates the generation gate's 30 prompts with those
features and judges them as the gate does, plus kind accuracy per subject. If the DiT learns the
kinds from such features but not from T5's, the text encoder is the obstacle; if not, the DiT is.

This is a diagnostic, not a base: the result is not a Mochi model folder (no T5 would reproduce
its features). Resumable; ~10 min of DiT steps plus ~2 min of generations on 2 cores.

    .venv/bin/python bench/toy_word_features.py       # the default ToyConfig's base
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dreamrelation.config import load_toy_config
from dreamrelation.data.world import caption, sample_specs
from dreamrelation.evaluation.toy import score, summarize
from dreamrelation.model.mochi import MOCHI, TINY_T5, encode_text
from dreamrelation.model.pretrain import DitData, build_models, train_dit
from dreamrelation.model.sample import generate
from dreamrelation.perception.judge import judge_video
from dreamrelation.plan import plan_toy
from dreamrelation.stages.pretrain import MODEL_DIR, PHASE_FILES, WORK_DIR

sys.path.insert(0, str(Path(__file__).parent))
from toy_identity import attribute_rates  # noqa: E402  (a sibling bench script)


class WordFeatures(nn.Module):
    """A text encoder without context: token id -> a fixed random unit-variance vector."""

    def __init__(self, vocab_size: int, dim: int, seed: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        with torch.no_grad():
            self.embed.weight.copy_(torch.randn(vocab_size, dim, generator=torch.Generator().manual_seed(seed)))
        self.embed.weight.requires_grad_(False)

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor]:
        return (self.embed(input_ids),)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-s", "--set", dest="overrides", action="append", default=[],
                        help="toy config override key.path=value, as for `dreamrelation pretrain` (repeatable)")
    args = parser.parse_args()
    config = load_toy_config(None, args.overrides)
    cfg = config.pretrain
    base = Path(config.root) / plan_toy(config)["pretrain_base"].key
    out = Path(config.root) / "experiments" / f"word-features-{base.name}"
    out.mkdir(parents=True, exist_ok=True)
    pipe = MOCHI.load_pipeline(base / MODEL_DIR)
    words = WordFeatures(len(pipe.tokenizer), TINY_T5["d_model"], seed=cfg.seed)

    state = torch.load(base / WORK_DIR / PHASE_FILES["dit_data"], weights_only=False)
    with torch.no_grad():
        parts = [encode_text(pipe.tokenizer, words, state["captions"][i : i + 64])
                 for i in range(0, len(state["captions"]), 64)]
        empty = encode_text(pipe.tokenizer, words, [""])
    data = DitData(state["latents"], torch.cat([e for e, _ in parts]), torch.cat([m for _, m in parts]),
                   (empty[0][0], empty[1][0]), state["captions"])
    _, transformer, _, _ = build_models(cfg)
    run = train_dit(transformer, data, cfg, out)
    print(f"DiT on word features: {run.steps} steps (resumed at {run.resumed_from}); "
          f"final loss {np.mean([v for _, v in run.losses[-10:]]):.3f}; checkpoint {out / 'dit.pt'}")

    pipe.transformer = transformer
    specs = sample_specs(cfg.world, cfg.gates.prompts, relations=cfg.seen_relations, seed=cfg.seed + 7919)
    judged, videos = [], []
    with torch.no_grad():
        for i, spec in enumerate(specs):  # as judge_generations, with word features for the text
            prompt = caption(spec, cfg.world)
            embeds, mask = encode_text(pipe.tokenizer, words, [prompt])
            setting = cfg.gates.sample.model_copy(update={"seed": cfg.gates.sample.seed + i})
            videos.append(generate(pipe, None, setting, text=(embeds, mask, empty[0], empty[1])))
            judged.append(score(judge_video(videos[-1]), spec, prompt))
    rates = summarize(judged)
    print(f"generation gates with word features: subject identity {rates['subject_fidelity']:.3f}, "
          f"relation {rates['relation_accuracy']:.3f} ({len(specs)} prompts)")
    print(f"per subject: {attribute_rates(videos, specs)}")


if __name__ == "__main__":
    main()
