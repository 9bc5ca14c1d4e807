"""The relation LoRA triplet (METHOD.md §2, §3 table) and its inference export (§5)."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
import torch
from diffusers import MochiTransformer3DModel, WanTransformer3DModel
from safetensors import safe_open

from dreamrelation.model import lora
from dreamrelation.model.wan import FULL_SIZE, WAN_LAYOUT
from dreamrelation.model.config import LoraTripletConfig
from dreamrelation.model.mochi import MOCHI, MOCHI_LAYOUT


def lora_modules(model: torch.nn.Module, adapter: str) -> set[str]:
    return {name.split(".lora_A.")[0] for name in lora.lora_parameters(model, adapter) if ".lora_A." in name}


# One projection (Q, K or V) of the full-size model at rank 16, by hand: per block the vision
# stream's 3072 -> 3072 and the text stream's 1536 -> 3072 linear layers, each r * (in + out).
PER_PROJECTION = 48 * 16 * ((3072 + 3072) + (1536 + 3072))  # = 8,257,536 (METHOD.md §2)
FFN = 16 * (48 * (3072 + 3072) + 47 * (3072 + 1536))  # to_out.0 in 48 blocks, to_add_out in 47


@pytest.mark.parametrize(
    "relation, subject",
    [("V", "QK"), ("Q", "KV"), ("KV", "Q"), ("QK", "V")],  # paper Table 3; QK + V is the method
)
def test_full_size_mochi_parameter_counts_of_table_3_rows_on_meta_device(relation: str, subject: str) -> None:
    with torch.device("meta"):
        model = MochiTransformer3DModel()  # the real 48-block, 3072/1536-wide config
    cfg = LoraTripletConfig(relation_positions=relation)
    assert cfg.resolved_subject_positions() == subject
    lora.add_relation_loras(model, cfg)
    rows = {row["adapter"]: row for row in lora.trainable_parameter_table(model)}
    assert rows["relation"]["params"] == len(relation) * PER_PROJECTION
    assert rows["subject1"]["params"] == rows["subject2"]["params"] == len(subject) * PER_PROJECTION
    assert rows["ffn"]["params"] == FFN == 8_183_808
    if relation == "QK":  # the method row: the figures of METHOD.md §2
        assert rows["relation"]["params"] == 16_515_072 and rows["subject1"]["params"] == 8_257_536
    assert rows["relation"]["modules"] == 2 * len(relation) * 48 and rows["ffn"]["modules"] == 2 * 48 - 1
    assert not lora_modules(model, "relation") & lora_modules(model, "subject1")  # never share a module
    assert lora_modules(model, "subject1") == lora_modules(model, "subject2")
    assert all(not n.startswith("time_embed") for n in lora.lora_parameters(model))


# Wan2.1-T2V at rank 16 (issue 23 §2): attention is not joint, so one 3-D linear layer per
# projection and block, r * (width + width): 1.3B 30 blocks x 1536 wide, 14B 40 blocks x 5120.
WAN_PER_LINEAR = {"1.3B": 16 * (1536 + 1536), "14B": 16 * (5120 + 5120)}  # 49,152 and 163,840


@pytest.mark.parametrize("size, blocks", [("1.3B", 30), ("14B", 40)])
def test_full_size_wan_parameter_counts_on_meta_device(size: str, blocks: int) -> None:
    """The figures of docs/performance.md's Wan table, printed, and where each adapter sits."""
    with torch.device("meta"):
        model = WanTransformer3DModel(**FULL_SIZE[size])
    lora.add_relation_loras(model, LoraTripletConfig())
    rows = {row["adapter"]: row for row in lora.trainable_parameter_table(model)}
    print(f"Wan2.1-T2V-{size}, rank 16: " + ", ".join(f"{a} {rows[a]['params']:,}" for a in lora.ADAPTERS))
    per = WAN_PER_LINEAR[size]
    assert rows["relation"]["params"] == 2 * blocks * per  # 2,949,120 / 13,107,200
    assert rows["subject1"]["params"] == rows["subject2"]["params"] == rows["ffn"]["params"] == blocks * per
    assert lora_modules(model, "relation") == {f"blocks.{i}.attn1.{p}" for i in range(blocks) for p in ("to_q", "to_k")}
    assert lora_modules(model, "subject1") == {f"blocks.{i}.attn1.to_v" for i in range(blocks)}
    assert lora_modules(model, "ffn") == {f"blocks.{i}.attn1.to_out.0" for i in range(blocks)}


def test_wan_cross_attention_switch_adds_attn2_query_and_mochi_refuses_it() -> None:
    tiny = dict(num_attention_heads=2, attention_head_dim=8, num_layers=2, ffn_dim=32, text_dim=16, freq_dim=16)
    model = WanTransformer3DModel(**tiny)
    lora.add_relation_loras(model, LoraTripletConfig(rank=2, alpha=2, relation_cross_attention=True))
    assert lora_modules(model, "relation") == {
        f"blocks.{i}.{m}" for i in range(2) for m in ("attn1.to_q", "attn1.to_k", "attn2.to_q")
    }
    assert not any(".attn2." in m for a in ("subject1", "subject2", "ffn") for m in lora_modules(model, a))
    cross = LoraTripletConfig(relation_cross_attention=True)  # HMT's groups do not depend on the family
    assert lora.select_lora_group("relation", cross) == ["relation", "subject1", "subject2", "ffn"]
    assert lora.adapter_names(cross) == list(lora.adapter_targets(cross, WAN_LAYOUT)) == list(lora.ADAPTERS)
    direct = WanTransformer3DModel(**tiny)
    lora.add_relation_loras(direct, LoraTripletConfig(rank=2, alpha=2, mode="direct"))
    assert lora_modules(direct, "direct") == {
        f"blocks.{i}.attn1.{p}" for i in range(2) for p in ("to_q", "to_k", "to_v", "to_out.0")
    }
    with pytest.raises(ValueError, match="relation_cross_attention needs a model with cross-attention; mochi"):
        lora.adapter_targets(LoraTripletConfig(relation_cross_attention=True), MOCHI_LAYOUT)
    with pytest.raises(TypeError, match=r"Linear is not the transformer of a known base model \(MochiTransformer3DModel, WanTransformer3DModel\)"):
        lora.add_relation_loras(torch.nn.Linear(2, 2), LoraTripletConfig())


def test_adapters_sit_exactly_where_the_table_says(tiny_dir: Path) -> None:
    model = MOCHI.load_transformer(tiny_dir)
    lora.add_relation_loras(model, LoraTripletConfig(rank=4, alpha=4))
    blocks = model.config.num_layers

    def where(*names: str, last: bool = True) -> set[str]:
        return {
            f"transformer_blocks.{i}.attn1.{n}"
            for i in range(blocks)
            for n in names
            if last or i < blocks - 1 or n != "to_add_out"
        }

    assert lora_modules(model, "relation") == where("to_q", "to_k", "add_q_proj", "add_k_proj")
    assert lora_modules(model, "subject1") == lora_modules(model, "subject2") == where("to_v", "add_v_proj")
    assert lora_modules(model, "ffn") == where("to_out.0", "to_add_out", last=False)
    # B starts at zero: the adapters do not change the base model yet
    assert all(p.abs().sum() == 0 for n, p in lora.lora_parameters(model).items() if ".lora_B." in n)
    assert all(p.dtype == torch.float32 for p in lora.lora_parameters(model).values())
    assert not any(p.requires_grad for n, p in model.named_parameters() if lora.adapter_of(n) is None)


_Q, _K, _V = {"to_q", "add_q_proj"}, {"to_k", "add_k_proj"}, {"to_v", "add_v_proj"}


@pytest.mark.parametrize(
    "positions, relation, subject",
    [("QK", _Q | _K, _V), ("Q", _Q, _K | _V), ("KV", _K | _V, _Q), ("V", _V, _Q | _K)],
)
def test_relation_and_subject_positions_of_table_3(
    tiny_dir: Path, positions: str, relation: set[str], subject: set[str]
) -> None:
    model = MOCHI.load_transformer(tiny_dir)
    lora.add_relation_loras(model, LoraTripletConfig(rank=2, alpha=2, relation_positions=positions))
    assert {m.rsplit(".", 1)[-1] for m in lora_modules(model, "relation")} == relation
    assert {m.rsplit(".", 1)[-1] for m in lora_modules(model, "subject1")} == subject
    assert {m.rsplit(".", 1)[-1] for m in lora_modules(model, "subject2")} == subject


def test_subject_positions_are_configurable_but_never_shared_with_the_relation() -> None:
    cfg = LoraTripletConfig(relation_positions="Q", subject_positions="V")  # K carries nothing
    assert lora.adapter_targets(cfg)["subject1"] == lora.target_regex(("v",))
    with pytest.raises(ValueError, match="different projections"):
        LoraTripletConfig(relation_positions="KV", subject_positions="V")
    # without the relation (or subject) LoRA there is nothing to collide with
    assert LoraTripletConfig(relation_positions="KV", subject_positions="V", use_relation=False)


def test_direct_baseline_and_ablation_switches(tiny_dir: Path) -> None:
    model = MOCHI.load_transformer(tiny_dir)
    names = lora.add_relation_loras(model, LoraTripletConfig(rank=2, alpha=2, mode="direct"))
    assert names == ["direct"]
    short = {m.split("attn1.")[1] for m in lora_modules(model, "direct")}
    assert short == {"to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"}

    no_subject = LoraTripletConfig(use_subject=False)
    assert list(lora.adapter_targets(no_subject)) == ["relation", "ffn"]
    assert lora.available_groups(no_subject) == ["relation"]
    assert lora.select_lora_group("relation", no_subject) == ["relation", "ffn"]
    assert lora.select_lora_group("subject1", LoraTripletConfig(use_ffn=False)) == ["subject1"]
    with pytest.raises(ValueError):
        LoraTripletConfig(use_relation=False, use_subject=False, use_ffn=False)


def test_select_lora_group_is_the_hmt_table() -> None:
    assert lora.select_lora_group("relation") == ["relation", "subject1", "subject2", "ffn"]
    assert lora.select_lora_group("subject1") == ["subject1", "ffn"]
    assert lora.select_lora_group("subject2") == ["subject2", "ffn"]
    with pytest.raises(ValueError, match="unknown LoRA group"):
        lora.select_lora_group("subject3")


def test_activate_adapters_makes_exactly_those_trainable(tiny_dir: Path, caplog) -> None:
    model = MOCHI.load_transformer(tiny_dir)
    lora.add_relation_loras(model, LoraTripletConfig(rank=4, alpha=4))
    lora.activate_adapters(model, lora.select_lora_group("subject2"))
    trainable = {lora.adapter_of(n) for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"subject2", "ffn"}
    with caplog.at_level(logging.INFO, logger="dreamrelation.model"):
        rows = lora.trainable_parameter_table(model)
    assert [(r["adapter"], r["trainable"]) for r in rows] == [
        ("relation", False), ("subject1", False), ("subject2", True), ("ffn", True)
    ]
    assert "LoRA subject2" in caplog.text


def _randomize(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in lora.lora_parameters(model).values():
            param.copy_(torch.randn(param.shape, generator=g) * 0.3)


def test_exported_lora_loads_through_the_pipeline_and_reproduces_the_model(tiny_dir: Path, tmp_path: Path) -> None:
    model = MOCHI.load_transformer(tiny_dir)
    lora.add_relation_loras(model, LoraTripletConfig(rank=4, alpha=8.0))  # alpha / r = 2 must be folded in
    _randomize(model)
    g = torch.Generator().manual_seed(1)
    inputs = dict(
        hidden_states=torch.randn(1, 12, 3, 4, 4, generator=g),
        encoder_hidden_states=torch.randn(1, 256, 32, generator=g),
        timestep=torch.tensor([250.0]),
        encoder_attention_mask=torch.arange(256)[None] < 9,
        return_dict=False,
    )
    lora.activate_adapters(model, ["relation", "ffn"])
    with torch.no_grad():
        trained = model(**inputs)[0]

    path = lora.export_inference_lora(model, tmp_path / "relation_lora.safetensors")
    with safe_open(path, "pt") as f:
        keys = list(f.keys())
    assert all(k.startswith("transformer.transformer_blocks.") for k in keys)
    assert not any("to_v" in k or "add_v_proj" in k for k in keys)  # no subject adapters

    pipe = MOCHI.load_pipeline(tiny_dir)
    with torch.no_grad():
        base = pipe.transformer(**inputs)[0]
    pipe.load_lora_weights(str(path))
    with torch.no_grad():
        loaded = pipe.transformer(**inputs)[0]
    assert not torch.allclose(base, trained, atol=1e-3)
    assert torch.allclose(loaded, trained, atol=1e-5)


def test_direct_export_keeps_the_single_adapter(tiny_dir: Path, tmp_path: Path) -> None:
    model = MOCHI.load_transformer(tiny_dir)
    lora.add_relation_loras(model, LoraTripletConfig(rank=2, alpha=2, mode="direct"))
    _randomize(model)
    state = lora.inference_state_dict(model)
    assert any(".to_v.lora_A." in k for k in state)
    assert len(state) == len(lora.lora_parameters(model))
    previous = os.umask(0o022)
    try:
        path = lora.export_inference_lora(model, tmp_path / "direct.safetensors")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # issue 24.6: not the temporary folder's 0600
    with pytest.raises(ValueError, match="no inference adapter"):
        lora.inference_state_dict(MOCHI.load_transformer(tiny_dir))


@pytest.mark.parametrize("relation, subject", [("V", "QK"), ("Q", "KV"), ("KV", "Q"), ("QK", "V")])
def test_table3_position_rows_on_wan_self_attention(relation: str, subject: str) -> None:
    """Paper Table 3's rows on Wan: relation and subjects on complementary projections of attn1 only."""
    model = WanTransformer3DModel(num_attention_heads=2, attention_head_dim=8, num_layers=2, ffn_dim=32, text_dim=16,
                                  freq_dim=16)
    lora.add_relation_loras(model, LoraTripletConfig(rank=2, alpha=2, relation_positions=relation))
    names = {"Q": "to_q", "K": "to_k", "V": "to_v"}
    assert lora_modules(model, "relation") == {f"blocks.{i}.attn1.{names[p]}" for i in range(2) for p in relation}
    assert lora_modules(model, "subject1") == {f"blocks.{i}.attn1.{names[p]}" for i in range(2) for p in subject}
