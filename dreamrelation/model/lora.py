"""The relation LoRA triplet on the Mochi DiT (METHOD.md §2) and its export for inference (§5).

Four named peft adapters live side by side in the diffusers transformer:

| adapter | vision stream | text stream |
|---|---|---|
| `relation` | `to_q`, `to_k` (configurable) | `add_q_proj`, `add_k_proj` |
| `subject1`, `subject2` | `to_v` (configurable) | `add_v_proj` |
| `ffn` | `to_out.0` | `to_add_out` (absent in the last block) |

The paper's Table 3 rows move the relation LoRA and put the subject LoRAs on the complementary
projections (relation V + subject QK, Q + KV, KV + Q, QK + V), so relation and subject adapters
never share a module (METHOD.md §2; `LoraTripletConfig.subject_positions`).

Targets are anchored regexes over full module names (peft `fullmatch`es a string
`target_modules`), because a bare `to_q` would also hit `time_embed.pooler.to_q`.
The `direct` baseline (METHOD.md §6) is one adapter named `direct` on Q, K, V and out.

On Wan (METHOD.md §9; issue 23) attention is not joint: the same adapters sit on the
self-attention `blocks.N.attn1` only (relation on `to_q`, `to_k`; subjects on `to_v`; FFN on
`to_out.0`), and `LoraTripletConfig.relation_cross_attention` adds the cross-attention query
`attn2.to_q` to the relation adapter. `attention_layout` picks the layout (`ModelFamily.layout`)
from the model class.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from peft import LoraConfig
from torch import nn

from dreamrelation.model.config import LoraTripletConfig
from dreamrelation.model.families import family_of_model
from dreamrelation.model.family import AttentionLayout
from dreamrelation.model.mochi import MOCHI_LAYOUT

log = logging.getLogger("dreamrelation.model")

ADAPTERS = ("relation", "subject1", "subject2", "ffn")
DIRECT = "direct"
#: Options of the per-step choice of hybrid mask training (METHOD.md §3), in mask order S1, S2, R.
GROUPS = ("relation", "subject1", "subject2")
#: Adapters active in each HMT group (METHOD.md §3 table).
GROUP_ADAPTERS = {
    "relation": ("relation", "subject1", "subject2", "ffn"),
    "subject1": ("subject1", "ffn"),
    "subject2": ("subject2", "ffn"),
}
#: Adapters kept for inference (METHOD.md §5): subject adapters are never exported.
INFERENCE_ADAPTERS = ("relation", "ffn", DIRECT)

_POSITIONS = {"V": ("v",), "Q": ("q",), "KV": ("k", "v"), "QK": ("q", "k")}
_LORA_PARAM = re.compile(r"\.lora_[AB]\.([^.]+)\.weight$")


def attention_layout(transformer: nn.Module) -> AttentionLayout:
    """The attention layout of a diffusers Mochi or Wan transformer (its family's, by class)."""
    return family_of_model(transformer).layout


def target_regex(projections: Sequence[str], layout: AttentionLayout = MOCHI_LAYOUT) -> str:
    """Anchored regex of the attention modules for `projections` (subset of q, k, v, out)."""
    names = [name for p in projections for name in layout.projections[p]]
    return rf"{layout.block}\.(?:{'|'.join(names)})"


def adapter_names(cfg: LoraTripletConfig) -> list[str]:
    """The adapters `cfg` configures, in any model family (METHOD.md §2; ablation switches)."""
    if cfg.mode == "direct":
        return [DIRECT]
    switches = {"relation": cfg.use_relation, "subject1": cfg.use_subject, "subject2": cfg.use_subject, "ffn": cfg.use_ffn}
    return [name for name in ADAPTERS if switches[name]]


def adapter_targets(cfg: LoraTripletConfig, layout: AttentionLayout = MOCHI_LAYOUT) -> dict[str, str]:
    """Adapter name -> target regex for the configured placement (METHOD.md §2, Table 3)."""
    if cfg.relation_cross_attention and layout.cross_query is None:
        raise ValueError(f"lora.relation_cross_attention needs a model with cross-attention; {layout.family}'s "
                         "attention is joint (the text tokens already pass through the relation LoRA)")
    if cfg.mode == "direct":
        return {DIRECT: target_regex(("q", "k", "v", "out"), layout)}
    targets: dict[str, str] = {}
    if cfg.use_relation:
        targets["relation"] = target_regex(_POSITIONS[cfg.relation_positions], layout)
        if cfg.relation_cross_attention:
            targets["relation"] = f"(?:{targets['relation']}|{layout.cross_query})"
    if cfg.use_subject:
        subject = target_regex(_POSITIONS[cfg.resolved_subject_positions()], layout)
        targets["subject1"] = subject
        targets["subject2"] = subject
    if cfg.use_ffn:
        targets["ffn"] = target_regex(("out",), layout)
    return targets


def add_relation_loras(transformer: nn.Module, cfg: LoraTripletConfig) -> list[str]:
    """Add the configured adapters (B = 0, dropout 0, float32 weights), freeze the base model.

    The placement follows the transformer's family (`attention_layout`). All added adapters
    are left active and trainable; returns their names.
    """
    targets = adapter_targets(cfg, attention_layout(transformer))
    names = list(targets)
    for name, regex in targets.items():
        config = LoraConfig(
            r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=0.0, init_lora_weights=True, target_modules=regex
        )
        with warnings.catch_warnings():  # several named adapters in one model is the point here
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            transformer.add_adapter(config, adapter_name=name)
    for param in lora_parameters(transformer).values():
        param.data = param.data.float()  # fp32 master weights, also under a bf16 base
    activate_adapters(transformer, names)
    return names


def available_groups(cfg: LoraTripletConfig) -> list[str]:
    """HMT options that train something under `cfg` (no subject groups without subject LoRAs)."""
    if cfg.mode == "direct":
        return [DIRECT]
    return ["relation", "subject1", "subject2"] if cfg.use_subject else ["relation"]


def select_lora_group(group: str, cfg: LoraTripletConfig | None = None) -> list[str]:
    """Adapters active (and trainable) for an HMT option (METHOD.md §3 table).

    With `cfg`, adapter types switched off by the ablation switches are left out.
    """
    if group == DIRECT:
        return [DIRECT]
    if group not in GROUP_ADAPTERS:
        raise ValueError(f"unknown LoRA group {group!r}; expected one of {(*GROUPS, DIRECT)}")
    adapters = list(GROUP_ADAPTERS[group])
    if cfg is not None:
        present = adapter_names(cfg)
        adapters = [a for a in adapters if a in present]
    return adapters


def adapter_of(param_name: str) -> str | None:
    """The adapter a parameter belongs to (`...lora_A.<adapter>.weight`), None for base weights."""
    match = _LORA_PARAM.search(param_name)
    return match.group(1) if match else None


def lora_parameters(transformer: nn.Module, adapter: str | None = None) -> dict[str, nn.Parameter]:
    """LoRA parameters by name, sorted (all adapters, or one)."""
    params = {}
    for name, param in transformer.named_parameters():
        owner = adapter_of(name)
        if owner is not None and (adapter is None or owner == adapter):
            params[name] = param
    return dict(sorted(params.items()))


def activate_adapters(transformer: nn.Module, adapters: Sequence[str]) -> None:
    """Use exactly `adapters` in the forward pass and make exactly their weights trainable.

    Everything else (base weights and idle adapters) gets `requires_grad=False`, so it receives
    no gradient and, with `zero_grad(set_to_none=True)`, no optimizer update at all.
    """
    transformer.set_adapter(list(adapters))
    for name, param in transformer.named_parameters():
        param.requires_grad_(adapter_of(name) in adapters)


def trainable_parameter_table(transformer: nn.Module) -> list[dict[str, object]]:
    """One row per adapter: modules it sits on, parameter count, whether it is trainable now."""
    rows: dict[str, dict[str, object]] = {}
    for name, param in lora_parameters(transformer).items():
        adapter = adapter_of(name)
        row = rows.setdefault(adapter, {"adapter": adapter, "modules": 0, "params": 0, "trainable": False})
        row["params"] += param.numel()
        row["modules"] += int(".lora_A." in name)
        row["trainable"] = row["trainable"] or param.requires_grad
    order = {name: i for i, name in enumerate((*ADAPTERS, DIRECT))}
    table = sorted(rows.values(), key=lambda r: order.get(r["adapter"], len(order)))
    for row in table:
        log.info(
            "LoRA %-9s modules=%-4d params=%-10d trainable=%s",
            row["adapter"],
            row["modules"],
            row["params"],
            row["trainable"],
        )
    return table


def inference_state_dict(transformer: nn.Module, adapters: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Merged peft state dict of the inference adapters with `lora_B` scaled by alpha / r.

    Keys are module-relative (`transformer_blocks.0.attn1.to_q.lora_A.weight`); the relation and
    FFN adapters sit on disjoint modules, so they merge without collisions. With the scale
    folded in, the loader's default alpha = r (scale 1) reproduces the trained model.
    """
    present = getattr(transformer, "peft_config", {})
    adapters = [a for a in (adapters or INFERENCE_ADAPTERS) if a in present]
    if not adapters:
        raise ValueError(f"no inference adapter to export; the model has {sorted(present)}")
    state: dict[str, torch.Tensor] = {}
    for adapter in adapters:
        config = present[adapter]
        scale = config.lora_alpha / config.r
        for name, param in lora_parameters(transformer, adapter).items():
            key = name.replace(f".{adapter}.weight", ".weight")
            if key in state:
                raise ValueError(f"adapters {adapters} overlap on {key}; cannot merge them")
            value = param.detach().float()
            state[key] = (value * scale if ".lora_B." in key else value).contiguous().cpu()
    return state


def readable_by_all(path: Path) -> None:
    """Give a file the mode a plain `open()` would (0644 under the usual umask 022).

    Files written through a temporary folder keep that folder's private mode (0600), which other
    users of a shared GPU machine (and a Prefect worker running as another user) cannot read.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def export_inference_lora(
    transformer: nn.Module, path: str | Path, adapters: Sequence[str] | None = None
) -> Path:
    """Write relation + FFN (or the direct baseline) as one safetensors file (METHOD.md §5 Export).

    Saved with the family pipeline's `save_lora_weights` (`MochiPipeline`, `WanPipeline`), so keys
    carry the `transformer.` prefix its `load_lora_weights` requires (without it the loader
    silently loads nothing).
    The file is written in a temporary folder and moved into place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = inference_state_dict(transformer, adapters)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as tmp:
        pipeline = family_of_model(transformer).pipeline_class
        pipeline.save_lora_weights(tmp, transformer_lora_layers=state, weight_name=path.name)
        os.replace(Path(tmp) / path.name, path)
    readable_by_all(path)
    log.info("exported inference LoRA (%d tensors) to %s", len(state), path)
    return path
