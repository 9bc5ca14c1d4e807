"""Sampling with the base model plus the inference LoRA through the family's diffusers pipeline.

METHOD.md §5: only the relation and FFN adapters are used (subject adapters are never loaded).
On Mochi-1 (`MochiPipeline`): Euler with the pipeline's linear-quadratic schedule, 64 steps,
CFG 6.0 with the empty negative prompt, 61 frames at 480x848, 30 fps. On Wan 2.1 (`WanPipeline`,
§9): UniPC, 50 steps, CFG 5.0, 81 frames at 480x832, 16 fps (the presets set these). The initial
noise comes from a CPU generator seeded by `SampleConfig.seed`, so a seed gives the same noise on
any device.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline
from safetensors import safe_open
from torch import nn

from dreamrelation.data.video import write_video
from dreamrelation.model.config import BaseModelConfig, SampleConfig
from dreamrelation.model.families import family_of, family_of_model, resolve_model_dir
from dreamrelation.model.family import ModelFamily, resolve_device, resolve_dtype

log = logging.getLogger("dreamrelation.model")

LORA_ADAPTER = "relation_lora"
_LORA_KEY = re.compile(r"^transformer\.(?P<module>.+)\.lora_(?P<kind>[AB])(?:\.[^.]+)?\.weight$")


class LoraFileError(ValueError):
    """A file given as an inference LoRA that is not one for this model; the message names it."""


def read_lora_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of an inference LoRA file, checked to be safetensors with `transformer.` keys.

    This is the format `export_inference_lora` writes and the pipelines' `load_lora_weights`
    read (METHOD.md §5 Export); anything else raises `LoraFileError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise LoraFileError(f"LoRA file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception as exc:  # safetensors raises its own SafetensorError (and OSError) on any bad header
        raise LoraFileError(f"LoRA file {path} is not a safetensors file ({exc})") from None
    if not any(key.startswith("transformer.") for key in shapes):
        example = next(iter(shapes), "none")
        raise LoraFileError(
            f"LoRA file {path} has no 'transformer.' keys (e.g. {example!r}): not an inference LoRA for "
            "a diffusers video pipeline; use the relation_lora.safetensors a training run exports"
        )
    return shapes


def check_lora_file(path: str | Path, transformer: nn.Module) -> None:
    """Raise `LoraFileError` unless every LoRA matrix in `path` fits a linear layer of `transformer`.

    A layer that already carries another LoRA (peft wraps it, keeping it as `<name>.base_layer`)
    counts as the layer it wraps: the evaluation loads one method's LoRA after another's.
    """
    layers = {name.removesuffix(".base_layer"): m for name, m in transformer.named_modules() if isinstance(m, nn.Linear)}
    for key, shape in read_lora_shapes(path).items():
        match = _LORA_KEY.match(key)
        if match is None:
            continue  # e.g. alphas or metadata entries the loader understands
        module = match["module"]
        if module not in layers:
            raise LoraFileError(
                f"LoRA file {path} targets {module}, which does not exist in this "
                f"{family_of_model(transformer).title} model ({key}): a LoRA for another base model?"
            )
        layer = layers[module]
        rank = shape[0] if match["kind"] == "A" else shape[1]
        expected = (rank, layer.in_features) if match["kind"] == "A" else (layer.out_features, rank)
        if len(shape) != 2 or shape != expected:
            raise LoraFileError(
                f"LoRA file {path}: {key} has shape {list(shape)}, but {module} needs {list(expected)}: "
                "a LoRA trained for another model size"
            )


def frames_to_uint8(frames: np.ndarray) -> np.ndarray:
    """Pipeline frames (T, H, W, 3) float in [0, 1] -> uint8."""
    return (np.clip(frames, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def load_inference_pipeline(
    family: ModelFamily,
    model_dir: str | Path,
    lora_path: str | Path | None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> DiffusionPipeline:
    """The family's base pipeline from `model_dir` with the exported inference LoRA loaded (if given)."""
    pipe = family.load_pipeline(model_dir, dtype=dtype, device=device)
    pipe.vae.enable_tiling()  # only tiles frames larger than 256 px: a no-op for the demo sizes
    if lora_path is not None:
        check_lora_file(lora_path, pipe.transformer)
        pipe.load_lora_weights(str(lora_path), adapter_name=LORA_ADAPTER)
        if LORA_ADAPTER not in getattr(pipe.transformer, "peft_config", {}):
            raise ValueError(f"{lora_path} loaded no LoRA weights into the transformer")
    return pipe


def generate(
    pipe: DiffusionPipeline,
    prompt: str | None,
    cfg: SampleConfig,
    text: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> np.ndarray:
    """One video as uint8 frames (T, H, W, 3).

    Either `prompt` (encoded by the pipeline, negative prompt `cfg.negative_prompt`) or `text`:
    precomputed (embeds, mask, negative embeds, negative mask), each with batch size 1.
    """
    kwargs: dict = {"prompt": prompt, "negative_prompt": cfg.negative_prompt}
    if text is not None:
        kwargs = family_of_model(pipe.transformer).pipeline_text(*text)
    out = pipe(
        **kwargs,
        height=cfg.height,
        width=cfg.width,
        num_frames=cfg.frames,
        num_inference_steps=cfg.steps,
        guidance_scale=cfg.guidance,
        generator=torch.Generator().manual_seed(cfg.seed),
        output_type="np",
    )
    return frames_to_uint8(out.frames[0])


def sample_video(
    prompt: str,
    lora_path: str | Path | None,
    out_path: str | Path,
    cfg: SampleConfig,
    base: BaseModelConfig | None = None,
) -> tuple[np.ndarray, Path]:
    """Generate `prompt` with base model + inference LoRA, write an mp4; returns (frames, path)."""
    base = base or BaseModelConfig()
    device = resolve_device(base)
    pipe = load_inference_pipeline(
        family_of(base), resolve_model_dir(base), lora_path, device, resolve_dtype(base, device)
    )
    frames = generate(pipe, prompt, cfg)
    write_video(out_path, frames, cfg.fps)
    return frames, Path(out_path)


class TrainingSampler:
    """Periodic samples during training, with the transformer being trained.

    The prompt is encoded once (the text encoder is freed afterwards); the VAE and scheduler stay
    loaded. The caller activates the inference adapters (relation + FFN) before calling.
    """

    def __init__(
        self,
        family: ModelFamily,
        model_dir: str | Path,
        cfg: SampleConfig,
        prompt: str,
        out_dir: str | Path,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.cfg = cfg
        self.family = family
        self.out_dir = Path(out_dir)
        tokenizer, text_encoder = family.load_text_encoder(model_dir, dtype=dtype, device=device)
        embeds, mask = family.encode_text(tokenizer, text_encoder, [prompt, cfg.negative_prompt], family.max_text_length)
        self.text = (embeds[:1], mask[:1], embeds[1:], mask[1:])
        del tokenizer, text_encoder
        if device.type == "cuda":
            torch.cuda.empty_cache()
        self.vae = family.load_vae(model_dir, dtype=dtype, device=device)
        self.vae.enable_tiling()
        self.scheduler = family.scheduler_class.from_pretrained(Path(model_dir) / "scheduler")

    def __call__(self, transformer: torch.nn.Module, step: int) -> Path:
        pipe = self.family.pipeline_from_parts(transformer, self.vae, self.scheduler)
        frames = generate(pipe, None, self.cfg, self.text)
        path = self.out_dir / f"step-{step:08d}.mp4"
        write_video(path, frames, self.cfg.fps)
        log.info("sample at step %d: %s", step, path)
        return path
