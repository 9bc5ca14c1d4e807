"""The Mochi-1 family (`MOCHI`): its classes, text features, flow convention and tiny demo model.

METHOD.md §1. The weights are read from a local folder in the diffusers `genmo/mochi-1-preview`
layout through the generic loaders of `model.family.ModelFamily`, so `MochiPipeline.from_pretrained`
and training see the same files.

The `demo` profile builds tiny randomly initialised models of the *same* diffusers /
transformers classes, respecting the constraints listed in METHOD.md §1: 12 latent channels
and the VAE's default 8x / 6x compression (the pipeline hard-codes both), VAE channel counts
that are multiples of 32, `text_embed_dim` equal to the T5 `d_model` and divisible by 8, an
even attention head dim, and a random `pos_frequencies` (zeros would mean no positions).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

import torch
from diffusers import (
    AutoencoderKLMochi,
    FlowMatchEulerDiscreteScheduler,
    MochiPipeline,
    MochiTransformer3DModel,
)
from transformers import T5Config, T5EncoderModel, T5Tokenizer

from dreamrelation.model.config import FAMILY_TEMPORAL_COMPRESSION, FAMILY_TEXT_LENGTH
from dreamrelation.model.family import AttentionLayout, ModelFamily
from dreamrelation.model.joint_attention import trim_text_padding

MOCHI_REPO = "genmo/mochi-1-preview"
#: Bump when the tiny configs below change, so an old cached tiny model is not reused.
TINY_VERSION = 1

TINY_TRANSFORMER: dict[str, Any] = dict(
    patch_size=2,
    num_attention_heads=2,
    attention_head_dim=32,
    num_layers=2,
    pooled_projection_dim=32,
    in_channels=12,
    text_embed_dim=32,
    time_embed_dim=32,
    max_sequence_length=256,
)
TINY_VAE: dict[str, Any] = dict(
    latent_channels=12,
    encoder_block_out_channels=(32, 32, 32, 32),
    decoder_block_out_channels=(32, 32, 32, 32),
    layers_per_block=(1, 1, 1, 1, 1),
    add_attention_block=(False, False, False, False, False),
)
TINY_T5: dict[str, Any] = dict(
    d_model=32,
    d_kv=8,
    d_ff=64,
    num_layers=2,
    num_heads=4,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=32,
    feed_forward_proj="gated-gelu",
)
#: Whole words of the tiny vocabulary; anything else is spelled letter by letter.
TINY_WORDS = (
    "a an the is are and of to with in on at by two one other each another person people man "
    "woman men women boy girl child bear raccoon dog cat fox monkey panda rabbit lion tiger "
    "shaking hands hand handshaking hugging hug pushing kicking punching slapping pointing giving "
    "walking towards apart high-five cheers carry photo follow whisper exchange support meadow "
    "field forest room park street beach snow"
).split()


#: Mochi's joint attention: per projection (vision-stream module, text-stream module) (METHOD.md §2).
MOCHI_LAYOUT = AttentionLayout("mochi", r"transformer_blocks\.\d+\.attn1", {
    "q": ("to_q", "add_q_proj"),
    "k": ("to_k", "add_k_proj"),
    "v": ("to_v", "add_v_proj"),
    "out": (r"to_out\.0", "to_add_out"),
})


# --------------------------------------------------------------------------- tiny models


def tiny_tokenizer(extra_words: Sequence[str] = ()) -> T5Tokenizer:
    """An offline T5 (unigram) tokenizer with a small fixed vocabulary (METHOD.md §1).

    `extra_words` become whole pieces too (the toy world's nouns, colours and verbs).
    """
    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -8.0)]
    words = list(dict.fromkeys([*TINY_WORDS, *extra_words]))
    pieces += [("▁" + word, -5.0) for word in words]
    chars = string.ascii_letters + string.digits + ".,;:!?'\"-()"
    pieces += [("▁" + c, -10.0) for c in chars] + [(c, -11.0) for c in chars]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=256)


def _tiny_pipeline(seed: int) -> MochiPipeline:
    tokenizer = tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = MochiTransformer3DModel(**TINY_TRANSFORMER)
        with torch.no_grad():  # real weights overwrite the zeros; random ones give positions
            transformer.pos_frequencies.normal_(0.0, 0.25)
        vae = AutoencoderKLMochi(**TINY_VAE)
        text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), **TINY_T5))
    scheduler = FlowMatchEulerDiscreteScheduler(invert_sigmas=True)
    return MochiPipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer
    )


@torch.no_grad()
def encode_text(
    tokenizer: T5Tokenizer, text_encoder: T5EncoderModel, captions: list[str], max_length: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """T5 features (B, L, D) and boolean mask (B, L), exactly as `MochiPipeline` computes them."""
    tokens = tokenizer(
        captions,
        padding="max_length",
        max_length=max_length,
        truncation=True,
        add_special_tokens=True,
        return_tensors="pt",
    )
    device = next(text_encoder.parameters()).device
    mask = tokens.attention_mask.bool().to(device)
    embeds = text_encoder(tokens.input_ids.to(device), attention_mask=mask)[0]
    return embeds, mask


# --------------------------------------------------------------------------- flow convention


def timestep_from_noise_level(s: torch.Tensor) -> torch.Tensor:
    """t = 1000 (1 - s): the pipeline's first call is t = 0 on pure noise (s = 1) (METHOD.md §1)."""
    return 1000.0 * (1.0 - s)


def noise_level_from_timestep(t: torch.Tensor) -> torch.Tensor:
    """Inverse of `timestep_from_noise_level`."""
    return 1.0 - t / 1000.0


def flow_target(z0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The velocity Mochi predicts: v = z0 - eps (METHOD.md §1)."""
    return z0 - eps


def predict_velocity(
    transformer: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The DiT's velocity as `MochiPipeline` asks for it: T5 features with their attention mask
    (trimmed to the longest caption of the batch: the same result, fewer tokens)."""
    embeds, mask = trim_text_padding(embeds, mask.bool())
    return transformer(
        hidden_states=x, encoder_hidden_states=embeds, timestep=t, encoder_attention_mask=mask, return_dict=False
    )[0]


def pipeline_text(
    embeds: torch.Tensor, mask: torch.Tensor, neg_embeds: torch.Tensor, neg_mask: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Precomputed prompt features as `MochiPipeline.__call__` takes them."""
    return dict(prompt_embeds=embeds, prompt_attention_mask=mask,
                negative_prompt_embeds=neg_embeds, negative_prompt_attention_mask=neg_mask)


MOCHI = ModelFamily(
    name="mochi",
    title="Mochi-1",
    hub_repo=MOCHI_REPO,
    preset="mochi-1",
    temporal_compression=FAMILY_TEMPORAL_COMPRESSION["mochi"],
    latent_channels=12,
    max_text_length=FAMILY_TEXT_LENGTH["mochi"],
    layout=MOCHI_LAYOUT,
    blocks="transformer_blocks",
    qkv_streams={
        "vision": ("attn1.to_q", "attn1.to_k", "attn1.to_v"),
        "text": ("attn1.add_q_proj", "attn1.add_k_proj", "attn1.add_v_proj"),
    },
    transformer_class=MochiTransformer3DModel,
    vae_class=AutoencoderKLMochi,
    text_encoder_class=T5EncoderModel,
    tokenizer_class=T5Tokenizer,
    pipeline_class=MochiPipeline,
    scheduler_class=FlowMatchEulerDiscreteScheduler,
    tiny_pipeline=_tiny_pipeline,
    tiny_version=TINY_VERSION,
    encode_text=encode_text,
    timestep=timestep_from_noise_level,
    flow_target=flow_target,
    predict=predict_velocity,
    pipeline_text=pipeline_text,
)
