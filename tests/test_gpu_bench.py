"""bench/gpu.py without a GPU: the full-size plan on the meta device (METHOD.md §1-§2 sizes), and
every measurement function run once on the tiny model on CPU."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from dreamrelation.data.video import VideoConfig
from dreamrelation.model.mochi import MOCHI

PER_PROJECTION = 48 * 16 * ((3072 + 3072) + (1536 + 3072))  # one of Q, K, V at rank 16, both streams
FFN = 8_183_808  # METHOD.md §2


@pytest.fixture(scope="module")
def gpu():
    path = Path(__file__).resolve().parents[1] / "bench" / "gpu.py"
    spec = importlib.util.spec_from_file_location("bench_gpu", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_full_size_plan_on_the_meta_device(gpu) -> None:
    plan = gpu.plan("meta")
    assert plan["params"] == {
        "relation": 16_515_072,
        "subject1": 8_257_536,
        "subject2": 8_257_536,
        "ffn": FFN,
        "direct": 3 * PER_PROJECTION + FFN,  # the plain baseline: Q, K, V and out
    }
    assert 9.5e9 < plan["base_params"] < 10.5e9  # Mochi-1 is a 10B DiT
    assert plan["sizes"]["61x480x848"] == {"latent": (12, 11, 60, 106), "vision_tokens": 11 * 30 * 53,
                                           "text_tokens": 256}
    assert plan["sizes"]["25x480x848"]["latent"] == (12, 5, 60, 106)
    assert plan["sizes"]["25x480x848"]["vision_tokens"] == 7950
    transformer = plan["transformer"]
    assert transformer.config.num_layers == 48 and transformer.is_gradient_checkpointing
    dtypes = {p.dtype for n, p in transformer.named_parameters() if ".lora_" not in n}
    assert dtypes == {torch.bfloat16}  # initialised directly in bf16, LoRAs in fp32
    assert {p.dtype for n, p in transformer.named_parameters() if ".lora_" in n} == {torch.float32}
    vae = gpu.full_size_vae("meta")
    assert vae.config.latent_channels == 12 and {p.dtype for p in vae.parameters()} == {torch.bfloat16}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU exit")
def test_without_cuda_it_says_so_in_one_line(gpu, capsys, monkeypatch) -> None:
    monkeypatch.setattr("sys.argv", ["bench/gpu.py"])
    gpu.main()
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "no CUDA device" in out


def test_measurements_run_on_the_tiny_model_on_cpu(gpu, tiny_dir: Path, vae_config) -> None:
    cpu = torch.device("cpu")
    meter = gpu.Meter(cpu, budget_s=600)
    small, smaller = VideoConfig(num_frames=13, height=32, width=32), VideoConfig(num_frames=7, height=32, width=32)
    transformer = MOCHI.load_transformer(tiny_dir)
    benches = gpu.training_benches(transformer, cpu, torch.float32, vae_config, small)
    rows = gpu.measure_training(benches, "13x32x32", small, meter)
    assert [r.what for r in rows] == ["DreamRelation step 13x32x32 (HMT + RCL)", "plain single-LoRA step 13x32x32",
                                      "ratio dreamrelation/plain 13x32x32"]
    assert all(r.seconds > 0 for r in rows) and rows[2].seconds == pytest.approx(rows[0].seconds / rows[1].seconds)
    assert benches["full"].state.step == 4 and benches["plain"].state.step == 1 + gpu.PLAIN_STEPS
    # another clip length after the first: the positive bank starts afresh, RCL still runs
    rows += gpu.measure_training(benches, "7x32x32", smaller, meter, deterministic=True)
    assert rows[-1].seconds > 0 and not benches["full"].cfg.deterministic and len(benches["full"].state.pos_bank) == 4
    sampling = gpu.measure_sampling(transformer, small, meter, steps=64, repeats=1)
    assert sampling.seconds > 0 and "x 64" in sampling.note
    vae_rows = gpu.measure_vae(MOCHI.load_vae(tiny_dir), smaller, meter, size="7x32x32")
    assert [r.what for r in vae_rows] == ["VAE encode 7x32x32, tiled", "VAE decode 7x32x32, tiled",
                                          "VAE encode 7x32x32, untiled"]
    assert all(r.seconds > 0 and r.peak_gib is None for r in vae_rows)  # CPU: no allocator peak
    every = rows + [sampling] + vae_rows
    table = gpu.format_table(every, "header").splitlines()
    assert table[0] == "header" and len(table) == 4 + len(every)  # header, blank, column names, rule, rows
    assert table[-1].startswith("| VAE encode 7x32x32, untiled | ")
    failed = gpu.guarded("broken", meter, lambda: (_ for _ in ()).throw(RuntimeError("CUDA out of memory.")))
    assert failed[0].seconds is None and "out of memory" in failed[0].note


@pytest.mark.parametrize("size, blocks, width", [("1.3B", 30, 1536), ("14B", 40, 5120)])
def test_wan_plan_on_the_meta_device(gpu, size: str, blocks: int, width: int) -> None:
    """The Wan rows' setup: docs/performance.md's shapes and counts (81x480x832 -> 16x21x60x104, 32,760 tokens)."""
    plan = gpu.plan_wan(size, "meta")
    per_linear = 16 * (width + width)
    assert plan["params"] == {"relation": 2 * blocks * per_linear, "subject1": blocks * per_linear,
                              "subject2": blocks * per_linear, "ffn": blocks * per_linear,
                              "direct": 4 * blocks * per_linear}
    assert plan["latent"] == (16, 21, 60, 104) and plan["vision_tokens"] == 32_760 and plan["text_tokens"] == 512
    expected_base = {"1.3B": 1.42e9, "14B": 14.29e9}[size]  # the published sizes
    assert abs(plan["base_params"] - expected_base) < 0.02 * expected_base
    transformer = plan["transformer"]
    assert transformer.is_gradient_checkpointing
    assert {p.dtype for n, p in transformer.named_parameters() if ".lora_" not in n} == {torch.bfloat16}


def test_wan_training_rows_run_on_a_tiny_wan_on_cpu(gpu, monkeypatch) -> None:
    """`wan_rows` end to end on CPU, with the full-size builder swapped for a tiny Wan and a tiny clip."""
    from diffusers import WanTransformer3DModel

    from dreamrelation.model.wan import TINY_TRANSFORMER

    monkeypatch.setattr(gpu, "full_size_wan", lambda size, device, dtype: WanTransformer3DModel(**TINY_TRANSFORMER))
    monkeypatch.setattr(gpu, "WAN_VIDEO", VideoConfig(num_frames=9, height=32, width=32, temporal_compression=4))
    cpu = torch.device("cpu")
    rows = gpu.wan_rows("1.3B", cpu, gpu.Meter(cpu, budget_s=600), dtype=torch.float32)
    assert [r.what for r in rows] == [f"DreamRelation step Wan 1.3B {gpu.WAN_SIZE} (HMT + RCL)",
                                      f"plain single-LoRA step Wan 1.3B {gpu.WAN_SIZE}",
                                      f"ratio dreamrelation/plain Wan 1.3B {gpu.WAN_SIZE}"], rows
    assert all(r.seconds > 0 for r in rows) and "peak target <= 16 GB" in rows[0].note
