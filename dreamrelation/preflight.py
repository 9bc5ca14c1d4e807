"""Checks before a pipeline run's first stage: every input the stages it will run read (issue 24 §5).

A stage finds a bad input when it opens it, and some stages open theirs after hours of work (the
evaluation prompts after training, the model after selection and captions). `check_inputs`
opens them all first, for the stages up to `stop_after`, without building or writing anything:

- encode_latents, train_relation, evaluate: the base model (`model.model_dir`, or the Mochi-1
  folder under `model.models_cache`); the demo's tiny model is built later where none is given;
- make_masks: the segmentation model folders the backend reads, where given;
- evaluate: the prompt file and the relation's prompts (`evaluate.prompts_path`), the LoRA files
  of `lora_file` methods, and on a real run (no tiny metric models, no generated dataset) the
  metric models and reference videos; the toy judge's prompts with `relation_judge: toy`.

Selection checks its own inputs as it starts (the dataset root, the windows file, and with
`masks.backend: provided` every clip's masks, so a clip whose masks do not fit is replaced by the
next usable one: `data.select.select_folder_clips`). Errors are `InputError` (a ValueError):
one message naming the config key, which the CLI prints as one `error:` line.
"""

from __future__ import annotations

from pathlib import Path

from dreamrelation.config import PipelineConfig
from dreamrelation.data.masks import MaskConfig
from dreamrelation.model.config import BaseModelConfig
from dreamrelation.plan import STAGES

#: Mask backends that load a segmentation model, and the folders each reads.
MASK_MODEL_KEYS = {"grounded-sam2": ("detector_dir", "segmenter_dir"), "skeleton-sam2": ("segmenter_dir",)}


class InputError(ValueError):
    """An input a stage of the run will read is missing or unusable; the message starts with its config key."""


def stages_to_run(stop_after: str | None = None) -> tuple[str, ...]:
    """The stages of a pipeline run that ends after `stop_after` (None: all six)."""
    if stop_after is None:
        return STAGES
    if stop_after not in STAGES:
        raise ValueError(f"stop_after={stop_after!r} is not a stage; stages: {', '.join(STAGES)}")
    return STAGES[: STAGES.index(stop_after) + 1]


def check_inputs(relation: str, config: PipelineConfig, stop_after: str | None = None) -> None:
    """Raise InputError for the first input of `relation`'s run (up to `stop_after`) that a stage could not use."""
    stages = stages_to_run(stop_after)
    if {"encode_latents", "train_relation", "evaluate"} & set(stages):
        check_model(config.model)
    if "make_masks" in stages:
        check_mask_models(config.masks)
    if "evaluate" in stages:
        check_evaluation(relation, config)


def check_model(model: BaseModelConfig) -> None:
    """The base model folder is complete, or will be built (demo, no model_dir) or downloaded (allow_download)."""
    if model.profile == "demo" and model.model_dir is None:
        return  # the tiny demo model, built under models_cache on first use
    from dreamrelation.model.families import family_of, hub_repo, weights_dir  # deferred: heavy (torch, diffusers)
    from dreamrelation.model.family import ModelFolderError, missing_components  # deferred: heavy (torch, diffusers)

    family = family_of(model)
    folder = weights_dir(model)
    if model.profile != "demo" and model.allow_download and missing_components(folder):
        return  # fetched at run time, as asked
    if model.model_dir is None and missing_components(folder):
        raise InputError(
            f"model.model_dir: profile '{model.profile}' needs model_dir, a local folder with {hub_repo(model)} in the "
            f"diffusers layout (nothing at {folder}, the default under model.models_cache); "
            "or set model.allow_download=true"
        )
    try:
        family.check_model_dir(folder)
    except ModelFolderError as exc:
        raise InputError(f"model.model_dir: {exc}") from None


def check_mask_models(masks: MaskConfig) -> None:
    """The detector / segmenter folders the backend loads exist (unset: tiny demo models are built)."""
    for key in MASK_MODEL_KEYS.get(masks.backend, ()):
        folder = getattr(masks, key)
        if folder is None:
            continue
        if not Path(folder).is_dir():
            raise InputError(f"masks.{key}: {folder} is not a folder (masks.backend={masks.backend})")
        if not (Path(folder) / "config.json").is_file():
            raise InputError(f"masks.{key}: {folder} has no config.json (a transformers checkpoint folder is needed)")


def check_evaluation(relation: str, config: PipelineConfig) -> None:
    """Prompts, method LoRA files and metric inputs of the evaluate stage."""
    from dreamrelation.evaluation.generate import eval_prompts, resolve_lora  # deferred: heavy (torch)
    from dreamrelation.evaluation.score import check_metric_inputs, check_toy_judge_inputs  # deferred: heavy (torch)

    evaluate = config.evaluate
    try:
        prompts = eval_prompts(relation, evaluate)
    except ValueError as exc:
        raise InputError(f"evaluate.prompts_path: {exc}") from None
    for index, method in enumerate(evaluate.methods):
        if method.source == "lora_file":
            try:
                resolve_lora(method, relation, None)
            except (ValueError, OSError) as exc:
                raise InputError(f"evaluate.methods[{index}].lora_path: {exc}") from None
    try:
        if evaluate.build_tiny_models or config.synthetic is not None:
            # the demo builds its tiny metric models and reference videos during the run
            if evaluate.relation_judge == "toy":
                check_toy_judge_inputs(evaluate, prompts)
        else:
            check_metric_inputs(evaluate, prompts)
    except ValueError as exc:
        raise InputError(f"evaluate: {exc}") from None
