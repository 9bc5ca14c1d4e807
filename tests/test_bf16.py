"""The bfloat16 path on CPU (METHOD.md §5: bf16, gradient checkpointing): base weights in bf16,
LoRA weights in fp32, the same autocast path as on CUDA (`model.numerics`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest_model import Text, make_clips, tiny_train_config
from safetensors.torch import load_file

from dreamrelation.model.mochi import MOCHI
from dreamrelation.data.video import read_video
from dreamrelation.model import lora
from dreamrelation.model import train as T
from dreamrelation.model.config import BaseModelConfig, SampleConfig

CPU = torch.device("cpu")


def bf16_base(model_dir: Path) -> BaseModelConfig:
    return BaseModelConfig(profile="demo", model_dir=str(model_dir), device="cpu", dtype="bfloat16")


def run_steps(tiny_dir: Path, text: Text, vae_config, checkpointing: bool, steps: int = 4):
    """`steps` training steps in bf16; per step its record and the LoRA gradients it produced."""
    cfg = tiny_train_config(steps=steps, gradient_checkpointing=checkpointing)
    state = T.build_state(cfg, MOCHI, tiny_dir, CPU, torch.bfloat16)
    grads: dict[str, torch.Tensor] = {}
    for name, param in lora.lora_parameters(state.transformer).items():
        param.register_hook(lambda g, name=name: grads.__setitem__(name, g.detach().clone()))
    autocast_seen: list[tuple[bool, torch.dtype]] = []
    state.transformer.register_forward_pre_hook(
        lambda *_: autocast_seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
    )
    clips = make_clips(text)
    out = []
    for _ in range(steps):
        grads.clear()
        record = T.train_step(state, clips, text.empty, vae_config, cfg)
        out.append((record, dict(grads)))
    return state, out, autocast_seen


def test_bf16_base_with_fp32_loras_takes_the_autocast_path_and_checkpointing_changes_nothing(
    tiny_dir: Path, text: Text, vae_config
) -> None:
    plain_state, plain, autocast_seen = run_steps(tiny_dir, text, vae_config, checkpointing=False)
    ckpt_state, ckpt, _ = run_steps(tiny_dir, text, vae_config, checkpointing=True)

    base = [p for n, p in plain_state.transformer.named_parameters() if lora.adapter_of(n) is None]
    assert {p.dtype for p in base} == {torch.bfloat16}
    assert {p.dtype for p in lora.lora_parameters(plain_state.transformer).values()} == {torch.float32}
    assert autocast_seen and all(seen == (True, torch.bfloat16) for seen in autocast_seen)  # explicit, as on CUDA
    assert ckpt_state.transformer.is_gradient_checkpointing and not plain_state.transformer.is_gradient_checkpointing

    for (rec_a, grads_a), (rec_b, grads_b) in zip(plain, ckpt):
        assert rec_a["group"] == rec_b["group"] and rec_a["clip"] == rec_b["clip"]
        assert rec_a["loss_rec"] == pytest.approx(rec_b["loss_rec"], rel=1e-4)
        assert (rec_a["loss_rcl"] is None) == (rec_b["loss_rcl"] is None)
        if rec_a["loss_rcl"] is not None:
            assert rec_a["loss_rcl"] == pytest.approx(rec_b["loss_rcl"], rel=1e-4)
        assert grads_a.keys() == grads_b.keys() and grads_a  # the same adapters received a gradient
        for name, grad in grads_a.items():
            assert grad.dtype == torch.float32 and torch.isfinite(grad).all()
            assert torch.allclose(grad, grads_b[name], rtol=1e-3, atol=1e-5), name
    assert {r["group"] for r, _ in plain} >= {"relation"}


@pytest.mark.parametrize("checkpointing", [True, False])
def test_bf16_resume_is_exact_and_the_sample_decodes(tiny_dir: Path, text: Text, vae_config, tmp_path: Path,
                                                     checkpointing: bool) -> None:
    """Train -> checkpoint -> resume -> train in bf16 on CPU: the same weights as an uninterrupted
    run; the periodic sample goes through MochiPipeline in bf16."""
    sample = SampleConfig(steps=2, frames=7, height=32, width=32, guidance=2.0)
    cfg = tiny_train_config(steps=4, checkpoint_every=2, gradient_checkpointing=checkpointing, sample_every=4,
                            sample=sample)
    clips = make_clips(text, n=2)
    whole = T.train(clips, text.empty, vae_config, cfg, tmp_path / "whole", bf16_base(tiny_dir))
    half = T.train(clips, text.empty, vae_config, cfg, tmp_path / "split", bf16_base(tiny_dir), stop_at=2)
    rest = T.train(clips, text.empty, vae_config, cfg, tmp_path / "split", bf16_base(tiny_dir))
    assert half.final_step == 2 and rest.resumed_from == 2 and rest.final_step == 4

    a = load_file(whole.checkpoint / "adapters.safetensors")
    b = load_file(rest.checkpoint / "adapters.safetensors")
    assert a.keys() == b.keys() and all(a[k].dtype == torch.float32 and torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "whole" / "metrics.jsonl").read_text() == (tmp_path / "split" / "metrics.jsonl").read_text()

    frames, _ = read_video(tmp_path / "split" / "samples" / "step-00000004.mp4")
    assert frames.shape[:3] == (7, 32, 32) and frames.dtype == np.uint8
