"""Numerics of a training step: the mixed-precision path and the deterministic switch (METHOD.md §5).

- Mixed precision: with bfloat16 base weights the transformer runs under bfloat16 autocast,
  on CPU exactly as on CUDA (CPU autocast supports bfloat16), so the CPU tests exercise the
  GPU code path. The LoRA weights stay float32 (`lora.add_relation_loras`); the losses are
  computed in float32 (`losses.masked_flow_loss`, `losses.rcl_loss`). diffusers' Mochi RoPE
  opens a float32 autocast region; on CPU torch warns that float32 autocast is unsupported and
  turns autocast off inside it instead, which computes the same float32 product (its inputs
  are cast to float32 explicitly).
- Determinism (`TrainConfig.deterministic`): strict `torch.use_deterministic_algorithms`,
  `CUBLAS_WORKSPACE_CONFIG=:4096:8`, no cuDNN autotuning, and scaled-dot-product attention
  restricted to flash, memory-efficient and math kernels. Under strict deterministic mode
  PyTorch runs the flash and memory-efficient attention backward in their deterministic form
  (no split-key atomics) and never picks cuDNN attention; listing the backends makes that
  choice explicit. The context covers forward *and* backward: with gradient checkpointing the
  forward is recomputed inside backward and must take the same kernels.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

CUBLAS_WORKSPACE = "CUBLAS_WORKSPACE_CONFIG"
#: The cuBLAS workspace settings NVIDIA documents as reproducible.
DETERMINISTIC_CUBLAS = (":4096:8", ":16:8")
#: Attention kernels allowed in deterministic mode (cuDNN attention has no deterministic backward).
DETERMINISTIC_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def uses_autocast(dtype: torch.dtype) -> bool:
    """Whether a base model in `dtype` runs under autocast (bfloat16 weights; any device)."""
    return dtype == torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Autocast to `dtype` on `device` for bfloat16 base weights, else nothing (float32 runs as is)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_autocast(dtype))


@contextlib.contextmanager
def deterministic_mode(enabled: bool) -> Iterator[None]:
    """Run the enclosed forward + backward with deterministic kernels; restore the global flags after.

    The cuBLAS workspace variable is set when missing; it takes effect only if cuBLAS was not
    used before in this process (set it in the worker's environment to be sure). A different,
    non-deterministic value is an error rather than a silent loss of determinism.
    """
    if not enabled:
        yield
        return
    os.environ.setdefault(CUBLAS_WORKSPACE, DETERMINISTIC_CUBLAS[0])
    if os.environ[CUBLAS_WORKSPACE] not in DETERMINISTIC_CUBLAS:
        raise ValueError(
            f"train.deterministic needs {CUBLAS_WORKSPACE} in {DETERMINISTIC_CUBLAS}, "
            f"not {os.environ[CUBLAS_WORKSPACE]!r}"
        )
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
    )
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        with sdpa_kernel(DETERMINISTIC_ATTENTION):
            yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark = previous[2]
