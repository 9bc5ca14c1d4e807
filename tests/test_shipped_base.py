"""The toy base in the repository, `toy-base/` (issue 22 §1): small, stock-loadable, today's key."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKLMochi, MochiTransformer3DModel
from safetensors import safe_open
from transformers import AutoTokenizer, T5EncoderModel

from dreamrelation.config import ToyConfig
from dreamrelation.plan import plan_toy
from dreamrelation.model.family import TOY_BASE_FILE
from dreamrelation.stages.pretrain import GATES_FILE, MODEL_DIR

SHIPPED = Path(__file__).resolve().parents[1] / "toy-base"


def test_shipped_base_has_todays_default_key() -> None:
    """`dreamrelation pretrain` with the default ToyConfig rebuilds this base: same key.

    Fails when the world, the base config or the pretraining code version changes: then
    regenerate it (docs/toy_world.md, "The shipped toy base").
    """
    shipped = json.loads((SHIPPED / TOY_BASE_FILE).read_text())["fingerprint"]
    assert shipped == plan_toy(ToyConfig())["pretrain_base"].fingerprint, (
        "toy-base/ was exported from another config; rerun `dreamrelation pretrain --export toy-base`"
    )


def test_shipped_base_is_small_float16_and_loads_with_the_stock_classes() -> None:
    files = [p for p in SHIPPED.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 10 * 2**20
    model = SHIPPED / MODEL_DIR
    for weights in model.rglob("*.safetensors"):
        with safe_open(str(weights), "pt") as handle:
            assert {handle.get_tensor(k).dtype for k in handle.keys()} == {torch.float16}, weights
    transformer = MochiTransformer3DModel.from_pretrained(model, subfolder="transformer", local_files_only=True)
    vae = AutoencoderKLMochi.from_pretrained(model, subfolder="vae", local_files_only=True)
    encoder = T5EncoderModel.from_pretrained(model, subfolder="text_encoder", local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(model, subfolder="tokenizer", local_files_only=True)
    assert transformer.config.in_channels == vae.config.latent_channels == 12
    assert encoder.config.d_model == transformer.config.text_embed_dim
    assert tokenizer("A dark person is pushing a light person.").input_ids[-1] == tokenizer.eos_token_id


def test_shipped_gates_name_the_relations_the_base_never_saw() -> None:
    gates = json.loads((SHIPPED / GATES_FILE).read_text())
    held_out = ToyConfig().pretrain.held_out_relations
    assert gates["held_out_relations"] == held_out and "push" in held_out
    assert not set(gates["seen_relations"]) & set(held_out)
    assert all("passed" in gate for gate in gates["gates"].values()) and gates["measured"]
