"""Sampling through MochiPipeline with the inference LoRA (METHOD.md §5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest_model import Text, cpu_base, make_clips, tiny_train_config
from safetensors.torch import load_file, save_file

from dreamrelation.data.video import read_video
from dreamrelation.model import lora
from dreamrelation.model import train as T
from dreamrelation.model.config import LoraTripletConfig, SampleConfig
from dreamrelation.model.mochi import MOCHI
from dreamrelation.model.sample import LoraFileError, check_lora_file, generate, load_inference_pipeline, sample_video

TINY = SampleConfig(steps=2, frames=7, height=32, width=48, guidance=6.0, seed=3)
PROMPT = "A bear is shaking hands with a raccoon in a meadow."


@pytest.fixture(scope="module")
def lora_file(tiny_dir: Path, tmp_path_factory) -> Path:
    """An exported inference LoRA from a triplet with random (non-zero) weights."""
    model = MOCHI.load_transformer(tiny_dir)
    lora.add_relation_loras(model, LoraTripletConfig(rank=4, alpha=4))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in lora.lora_parameters(model).values():
            param.copy_(torch.randn(param.shape, generator=g) * 0.5)
    return lora.export_inference_lora(model, tmp_path_factory.mktemp("lora") / "relation_lora.safetensors")


def test_generate_returns_seeded_uint8_frames(tiny_dir: Path, lora_file: Path) -> None:
    base = load_inference_pipeline(MOCHI, tiny_dir, None)
    with_lora = load_inference_pipeline(MOCHI, tiny_dir, lora_file)
    frames = generate(with_lora, PROMPT, TINY)
    assert frames.shape == (7, 32, 48, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames, generate(with_lora, PROMPT, TINY))  # same seed, same video
    assert not np.array_equal(frames, generate(with_lora, PROMPT, TINY.model_copy(update={"seed": 4})))
    assert not np.array_equal(frames, generate(base, PROMPT, TINY))  # the LoRA is active


def test_subject_adapters_are_never_loaded(tiny_dir: Path, lora_file: Path) -> None:
    pipe = load_inference_pipeline(MOCHI, tiny_dir, lora_file)
    modules = {n.split(".lora_A.")[0].rsplit(".", 1)[-1] for n, _ in pipe.transformer.named_parameters()
               if ".lora_A." in n}
    assert modules == {"to_q", "to_k", "add_q_proj", "add_k_proj", "0", "to_add_out"}  # "0" is to_out.0


def test_a_lora_without_the_transformer_prefix_is_refused(tiny_dir: Path, tmp_path: Path) -> None:
    """METHOD.md §5 pitfall: `save_lora_adapter` keys lack `transformer.`; the pipeline loads nothing."""
    model = MOCHI.load_transformer(tiny_dir)
    lora.add_relation_loras(model, LoraTripletConfig(rank=2, alpha=2))
    model.save_lora_adapter(tmp_path, adapter_name="relation")
    with pytest.raises(LoraFileError, match="has no 'transformer.' keys"):
        load_inference_pipeline(MOCHI, tiny_dir, tmp_path / "pytorch_lora_weights.safetensors")


def _bad_loras(folder: Path, lora_file: Path) -> dict[str, tuple[Path, str]]:
    """Files a user might pass as --lora, each with the message that must name what is wrong."""
    text = folder / "notes.safetensors"
    text.write_text("not a tensor file at all")
    tensors = load_file(lora_file)
    elsewhere = folder / "unknown_module.safetensors"
    key = next(k for k in tensors if ".to_q.lora_A." in k)
    save_file({key.replace("attn1.to_q", "attn9.to_q"): tensors[key]}, elsewhere)
    bigger = folder / "other_size.safetensors"
    save_file({key: torch.zeros(tensors[key].shape[0], 3072)}, bigger)
    return {
        "not safetensors": (text, f"LoRA file {text} is not a safetensors file"),
        "unknown module": (elsewhere, "transformer_blocks.0.attn9.to_q, which does not exist in this Mochi-1 model"),
        "another size": (bigger, "a LoRA trained for another model size"),
    }


def test_a_bad_lora_file_is_one_line_naming_it(tiny_dir: Path, lora_file: Path, tmp_path: Path) -> None:
    check_lora_file(lora_file, MOCHI.load_transformer(tiny_dir))  # the real export passes
    for kind, (path, message) in _bad_loras(tmp_path, lora_file).items():
        with pytest.raises(LoraFileError) as err:
            load_inference_pipeline(MOCHI, tiny_dir, path)
        assert message in str(err.value) and str(path) in str(err.value), kind


def test_cli_sample_with_a_bad_lora_exits_with_one_error_line(tiny_dir: Path, lora_file: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dreamrelation.flows.cli import app

    path, message = _bad_loras(tmp_path, lora_file)["not safetensors"]
    args = ["sample", "--lora", str(path), "--out", str(tmp_path / "x.mp4"), "-s", f"model.model_dir={tiny_dir}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert f"error: {message}" in " ".join(result.output.split()) and "Traceback" not in result.output
    assert not (tmp_path / "x.mp4").exists()


def test_sample_video_writes_an_mp4(tiny_dir: Path, lora_file: Path, tmp_path: Path) -> None:
    frames, path = sample_video(PROMPT, lora_file, tmp_path / "bear.mp4", TINY, cpu_base(tiny_dir))
    video, fps = read_video(path)
    assert video.shape == frames.shape and fps == pytest.approx(TINY.fps)


def test_periodic_samples_during_training_use_relation_and_ffn_only(tiny_dir: Path, text: Text, vae_config,
                                                                     tmp_path: Path) -> None:
    cfg = tiny_train_config(steps=4, sample_every=2, sample=TINY)
    active: list[list[str]] = []

    def spy(transformer: torch.nn.Module, step: int) -> None:
        active.append(list(transformer.transformer_blocks[0].attn1.to_v.active_adapters))
        assert not torch.is_grad_enabled()

    T.train(make_clips(text), text.empty, vae_config, cfg, tmp_path / "spy", cpu_base(tiny_dir), sampler=spy)
    assert active == [["relation", "ffn"], ["relation", "ffn"]]

    result = T.train(make_clips(text), text.empty, vae_config, cfg, tmp_path / "real", cpu_base(tiny_dir))
    samples = sorted(p.name for p in (tmp_path / "real" / "samples").glob("*.mp4"))
    assert samples == ["step-00000002.mp4", "step-00000004.mp4"]
    assert read_video(tmp_path / "real" / "samples" / samples[0])[0].shape == (7, 32, 48, 3)
    # sampling in between does not disturb training: same weights as a run without samples
    quiet = T.train(make_clips(text), text.empty, vae_config, cfg.model_copy(update={"sample_every": 0}),
                    tmp_path / "quiet", cpu_base(tiny_dir))
    assert result.loss_rec == quiet.loss_rec


def test_a_second_lora_is_checked_against_layers_the_first_one_wraps(tiny_dir: Path, lora_file: Path, tmp_path: Path) -> None:
    """Evaluation loads one method's LoRA after another's (issue 22: DreamRelation, then direct LoRA):
    layers peft wrapped for the first still count as the linear layers they wrap."""
    model = MOCHI.load_transformer(tiny_dir)
    lora.add_relation_loras(model, LoraTripletConfig(rank=2, alpha=2, mode="direct"))
    direct = lora.export_inference_lora(model, tmp_path / "direct.safetensors")
    pipe = load_inference_pipeline(MOCHI, tiny_dir, lora_file)  # relation LoRA on Q, K of both streams
    assert "add_k_proj" in {name.split(".")[-2] for name, _ in pipe.transformer.named_modules() if name.endswith("base_layer")}
    check_lora_file(direct, pipe.transformer)  # Q, K, V, out: refused before the fix
    pipe.load_lora_weights(str(direct), adapter_name="direct")
    assert "direct" in pipe.transformer.peft_config
