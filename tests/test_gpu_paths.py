"""Paths that only differ on a GPU: resume across devices (METHOD.md §4 banks), the deterministic
switch (METHOD.md §5, `model.numerics`). The CUDA test runs where a GPU is present."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest_model import Text, make_clips, tiny_train_config
from safetensors.torch import load_file

from dreamrelation.model.mochi import MOCHI
from dreamrelation.model import lora, numerics
from dreamrelation.model import train as T
from dreamrelation.model.config import BaseModelConfig

CUDA = torch.cuda.is_available()


def _flags() -> tuple[bool, bool, bool]:
    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cuda.cudnn_sdp_enabled(),
        torch.backends.cuda.flash_sdp_enabled(),
    )


def test_deterministic_step_sets_the_flags_for_forward_and_backward_then_restores_them(
    tiny_dir: Path, text: Text, vae_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(numerics.CUBLAS_WORKSPACE, raising=False)
    cfg = tiny_train_config(deterministic=True, gradient_checkpointing=True)
    state = T.build_state(cfg, MOCHI, tiny_dir, torch.device("cpu"), torch.float32)
    seen: dict[str, tuple[bool, bool, bool]] = {}

    def record(when: str) -> None:  # hooks must return None (a value would replace args / grad)
        seen.setdefault(when, _flags())

    state.transformer.register_forward_pre_hook(lambda *_: record("forward"))
    param = next(iter(lora.lora_parameters(state.transformer, "ffn").values()))
    param.register_hook(lambda g: record("backward"))
    before = _flags()
    T.train_step(state, make_clips(text), text.empty, vae_config, cfg)
    # deterministic algorithms on, cuDNN attention off, flash attention still allowed
    assert seen == {"forward": (True, False, True), "backward": (True, False, True)}
    assert _flags() == before and not torch.are_deterministic_algorithms_enabled()
    assert numerics.os.environ[numerics.CUBLAS_WORKSPACE] == ":4096:8"

    monkeypatch.setenv(numerics.CUBLAS_WORKSPACE, ":0:0")  # a setting that is not reproducible
    with pytest.raises(ValueError, match="CUBLAS_WORKSPACE_CONFIG"):
        T.train_step(state, make_clips(text), text.empty, vae_config, cfg)
    assert _flags() == before


def test_default_step_leaves_the_global_flags_alone(tiny_dir: Path, text: Text, vae_config) -> None:
    cfg = tiny_train_config()
    assert cfg.deterministic is False
    state = T.build_state(cfg, MOCHI, tiny_dir, torch.device("cpu"), torch.float32)
    seen: list[tuple[bool, bool, bool]] = []
    state.transformer.register_forward_pre_hook(lambda *_: seen.append(_flags()))
    before = _flags()
    T.train_step(state, make_clips(text), text.empty, vae_config, cfg)
    assert seen == [before]


def _resume_matches(tmp_path: Path, tiny_dir: Path, text: Text, vae_config, base: BaseModelConfig) -> None:
    """Train 6 steps; train 3, resume, train 3 more: the same weights and banks."""
    cfg = tiny_train_config(steps=6, checkpoint_every=3, deterministic=True, gradient_checkpointing=True)
    clips = make_clips(text, n=2)
    whole = T.train(clips, text.empty, vae_config, cfg, tmp_path / "whole", base)
    T.train(clips, text.empty, vae_config, cfg, tmp_path / "split", base, stop_at=3)
    rest = T.train(clips, text.empty, vae_config, cfg, tmp_path / "split", base)  # banks restored, 3 more steps
    assert rest.resumed_from == 3 and rest.final_step == 6 and rest.loss_rcl is not None
    a = load_file(whole.checkpoint / "adapters.safetensors")
    b = load_file(rest.checkpoint / "adapters.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa = torch.load(whole.checkpoint / "state.pt", map_location="cpu", weights_only=True)
    sb = torch.load(rest.checkpoint / "state.pt", map_location="cpu", weights_only=True)
    for bank in ("pos_bank", "neg_bank"):
        assert torch.equal(sa[bank]["items"], sb[bank]["items"]), bank


def test_deterministic_resume_on_cpu(tiny_dir: Path, text: Text, vae_config, tmp_path: Path) -> None:
    base = BaseModelConfig(profile="demo", model_dir=str(tiny_dir), device="cpu", dtype="float32")
    _resume_matches(tmp_path, tiny_dir, text, vae_config, base)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU: resume must put the memory banks on the GPU")
def test_resume_on_cuda_trains_on_with_the_banks_on_the_gpu(
    tiny_dir: Path, text: Text, vae_config, tmp_path: Path
) -> None:
    """Before the fix the restored banks stayed on the CPU and the second step after resume
    failed in `MemoryBank.sample` (device mismatch); with `deterministic` it is bit-identical."""
    base = BaseModelConfig(profile="demo", model_dir=str(tiny_dir), device="cuda", dtype="bfloat16")
    _resume_matches(tmp_path, tiny_dir, text, vae_config, base)
    cfg = tiny_train_config(steps=2, checkpoint_every=1)
    T.train(make_clips(text), text.empty, vae_config, cfg, tmp_path / "banks", base, stop_at=1)
    state = T.build_state(cfg, MOCHI, tiny_dir, torch.device("cuda"), torch.bfloat16)
    T.load_checkpoint(state, T.checkpoint_dirs(tmp_path / "banks")[-1], cfg)
    assert state.pos_bank.items and all(e.is_cuda for e in state.pos_bank.items + state.neg_bank.items)
