"""Evaluation videos (METHOD.md §6, step 1): prompts x seeds per method, generated resumably.

For every method of `EvalConfig.methods` (the DreamRelation LoRA of the relation, the base
model without LoRA, other inference LoRA files such as the direct-LoRA baseline or ablation
runs) and every (prompt, seed) pair, one video is written to
`videos/<method>/p<prompt>-seed<seed>.mp4`. Every method uses the same seeds, so the comparison
is paired. Videos already on disk are skipped (an interrupted run resumes; a video is written
under a temporary name and renamed, so a half-written file never counts). The base pipeline is
loaded once; each method's LoRA is loaded as a named adapter and deleted afterwards, so the
base model is exactly restored.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from dreamrelation.data.prompts import load_eval_prompts, prompts_for
from dreamrelation.data.video import write_video
from dreamrelation.evaluation.config import EvalConfig, EvalMethod, EvaluationError
from dreamrelation.model.config import BaseModelConfig, SampleConfig
from dreamrelation.model.families import family_of, resolve_model_dir
from dreamrelation.model.family import resolve_device, resolve_dtype
from dreamrelation.model.sample import check_lora_file, generate, load_inference_pipeline, read_lora_shapes
from dreamrelation.model.train import LORA_FILE

log = logging.getLogger("dreamrelation.evaluate")

VIDEOS_DIR = "videos"

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class VideoJob:
    """One video to generate (or already generated) for one method."""

    method: str  # method slug
    prompt_index: int
    prompt: str
    seed: int

    @property
    def file(self) -> str:
        """Path relative to the evaluation folder."""
        return f"{VIDEOS_DIR}/{self.method}/{video_name(self.prompt_index, self.seed)}"


def video_name(prompt_index: int, seed: int) -> str:
    return f"p{prompt_index:02d}-seed{seed}.mp4"


def eval_prompts(relation: str, config: EvalConfig) -> list[str]:
    """The relation's evaluation prompts (the first `prompts_per_relation` of them)."""
    table = load_eval_prompts(config.prompts_path)
    prompts = prompts_for(table, relation)
    if prompts is None:
        source = config.prompts_path or "the shipped prompt set"
        raise EvaluationError(
            f"no evaluation prompts for relation {relation} in {source} (it has {', '.join(sorted(table))}); "
            "give a prompt file with evaluate.prompts_path (YAML/JSON per relation, CSV relation,prompt, or a .txt "
            "with one prompt a line)"
        )
    return prompts[: config.prompts_per_relation] if config.prompts_per_relation else prompts


def plan_videos(methods: Sequence[EvalMethod], prompts: Sequence[str], seeds: Sequence[int]) -> dict[str, list[VideoJob]]:
    """Method slug -> its video jobs, prompts outer, seeds inner."""
    return {
        method.slug: [
            VideoJob(method.slug, index, prompt, seed) for index, prompt in enumerate(prompts) for seed in seeds
        ]
        for method in methods
    }


def resolve_lora(
    method: EvalMethod, relation: str, relation_lora: str | Path | None, trained_loras: dict[str, Path] | None = None
) -> Path | None:
    """The inference LoRA file of a method (None for the base model); raises if it is missing.

    `trained_loras` maps the slug of each 'trained' method to the LoRA the pipeline trained for it.
    """
    if method.source == "base":
        return None
    if method.source == "relation_lora":
        if relation_lora is None:
            raise EvaluationError(f"method {method.name!r} needs the relation LoRA, but none was given")
        path = Path(relation_lora)
    elif method.source == "trained":
        if method.slug not in (trained_loras or {}):
            raise EvaluationError(f"method {method.name!r} needs the LoRA the train_relation stage trains for it: "
                                  "run train_relation (with these evaluate.methods) first")
        path = Path((trained_loras or {})[method.slug])
    else:
        path = Path(str(method.lora_path).replace("{relation}", relation))
        if path.is_dir():
            path = path / LORA_FILE
    if not path.is_file():
        raise EvaluationError(f"method {method.name!r}: inference LoRA {path} does not exist")
    read_lora_shapes(path)  # fail before any video is generated, naming the file
    return path



def _adapter_name(slug: str) -> str:
    return "eval_" + slug.replace("-", "_")


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def generate_videos(
    jobs: Mapping[str, Sequence[VideoJob]],
    loras: Mapping[str, Path | None],
    out_dir: str | Path,
    sample: SampleConfig,
    base: BaseModelConfig,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Write every missing video of `jobs`; returns {"generated": n, "skipped": m}.

    `loras` maps a method slug to its inference LoRA (None: base model). The pipeline is only
    loaded when something is missing.
    """

    out = Path(out_dir)
    all_jobs = [job for method_jobs in jobs.values() for job in method_jobs]
    missing = [job for job in all_jobs if not (out / job.file).is_file()]
    counts = {"generated": 0, "skipped": len(all_jobs) - len(missing)}
    if counts["skipped"]:
        log.info("evaluation videos: %d already on disk, skipped", counts["skipped"])
    if not missing:
        return counts
    device = resolve_device(base)
    pipe = load_inference_pipeline(family_of(base), resolve_model_dir(base), None, device, resolve_dtype(base, device))
    try:
        with tqdm(total=len(missing), desc="evaluate: generate", unit="video", disable=None) as bar:
            for slug, method_jobs in jobs.items():
                todo = [job for job in method_jobs if not (out / job.file).is_file()]
                if not todo:
                    continue
                lora = loras.get(slug)
                adapter = _adapter_name(slug)
                if lora is not None:
                    check_lora_file(lora, pipe.transformer)
                    pipe.load_lora_weights(str(lora), adapter_name=adapter)
                    if adapter not in getattr(pipe.transformer, "peft_config", {}):
                        raise EvaluationError(f"{lora} loaded no LoRA weights into the transformer")
                try:
                    for job in todo:
                        frames = generate(pipe, job.prompt, sample.model_copy(update={"seed": job.seed}))
                        write_video(out / job.file, frames, sample.fps)
                        counts["generated"] += 1
                        bar.update(1)
                        bar.set_postfix(method=slug)
                        if progress is not None:
                            progress(counts["generated"], len(missing))
                finally:
                    if lora is not None:
                        pipe.delete_adapters(adapter)
    finally:
        del pipe
        _free(device)
    log.info("evaluation videos: generated %d", counts["generated"])
    return counts
