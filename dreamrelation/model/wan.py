"""The Wan 2.1 text-to-video family (`WAN`): its classes, text features, flow convention and tiny demo model.

METHOD.md §9 (facts verified in the diffusers 0.42.1 source and measured by
tests/test_wan_conventions.py):
- the weights are a local folder in the diffusers layout of `Wan-AI/Wan2.1-T2V-1.3B-Diffusers`
  (or `-14B-Diffusers`): `WanTransformer3DModel`, `AutoencoderKLWan` (16 channels, 8x spatial,
  T_c = 4: clips of 4k+1 frames), `UMT5EncoderModel` + tokenizer, `UniPCMultistepScheduler`;
- text: UMT5 features cut at each prompt's true length and padded with zeros to 512 tokens, as
  `WanPipeline` encodes prompts; the transformer takes no text mask (the zeros are the padding);
- flow: x = (1 - s) z0 + s eps as on Mochi, but the transformer's timestep is t = 1000 s
  (t = 1000 is pure noise) and it predicts v = eps - z0.

The demo's tiny Wan uses the same classes with small widths, the offline tokenizer of the tiny
Mochi (a T5 unigram vocabulary; UMT5 reads T5 tokenizers) and the 1.3B model's scheduler settings.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

from dreamrelation.model.config import FAMILY_TEMPORAL_COMPRESSION, FAMILY_TEXT_LENGTH
from dreamrelation.model.family import AttentionLayout, ModelFamily
from dreamrelation.model.mochi import TINY_T5, tiny_tokenizer

WAN_REPO = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
TINY_VERSION = 1
#: Wan's self-attention over video tokens; the text enters through `attn2`, the cross-attention (METHOD.md §9).
WAN_LAYOUT = AttentionLayout(
    "wan", r"blocks\.\d+\.attn1",
    {"q": ("to_q",), "k": ("to_k",), "v": ("to_v",), "out": (r"to_out\.0",)},
    cross_query=r"blocks\.\d+\.attn2\.to_q",
)

TINY_TRANSFORMER: dict[str, Any] = dict(
    num_attention_heads=2,
    attention_head_dim=16,
    num_layers=2,
    ffn_dim=64,
    text_dim=TINY_T5["d_model"],
    freq_dim=32,
    rope_max_seq_len=64,
)
TINY_VAE: dict[str, Any] = dict(
    base_dim=16, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1, attn_scales=[],
    temperal_downsample=[False, True, True],
)
#: The published transformer configs, as `WanTransformer3DModel` arguments (the 14B is the class default):
#: 1.3B 30 blocks x 12 heads x 128 (1536 wide), FFN 8960; 14B 40 blocks x 40 heads x 128 (5120), FFN 13824.
FULL_SIZE: dict[str, dict[str, Any]] = {"1.3B": dict(num_attention_heads=12, num_layers=30, ffn_dim=8960), "14B": {}}
#: `Wan-AI/Wan2.1-T2V-1.3B-Diffusers/scheduler`: UniPC on flow sigmas, shift 3 (the 480p setting).
SCHEDULER: dict[str, Any] = dict(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)


def _tiny_pipeline(seed: int) -> WanPipeline:
    tokenizer = tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = WanTransformer3DModel(**TINY_TRANSFORMER)
        vae = AutoencoderKLWan(**TINY_VAE)
        text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), **TINY_T5))
    return WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                       scheduler=UniPCMultistepScheduler(**SCHEDULER))


@torch.no_grad()
def encode_text(
    tokenizer: Any, text_encoder: torch.nn.Module, captions: list[str], max_length: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """UMT5 features (B, L, D), zero past each caption's true length, and that length as a mask (B, L),
    exactly as `WanPipeline` encodes prompts (METHOD.md §9)."""
    tokens = tokenizer(
        captions, padding="max_length", max_length=max_length, truncation=True, add_special_tokens=True,
        return_attention_mask=True, return_tensors="pt",
    )
    device = next(text_encoder.parameters()).device
    mask = tokens.attention_mask.bool().to(device)
    embeds = text_encoder(tokens.input_ids.to(device), tokens.attention_mask.to(device)).last_hidden_state
    return embeds * mask.unsqueeze(-1).to(embeds.dtype), mask


def timestep_from_noise_level(s: torch.Tensor) -> torch.Tensor:
    """t = 1000 s: Wan's pipeline starts at t ~ 1000 on pure noise (METHOD.md §9)."""
    return 1000.0 * s


def flow_target(z0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The velocity Wan predicts: v = eps - z0 (the scheduler's x0 = x_t - s v; METHOD.md §9)."""
    return eps - z0


def predict_velocity(
    transformer: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The DiT's velocity as `WanPipeline` asks for it: zero-padded features at full length, no mask."""
    del mask  # the pipeline passes none: the zero rows are the padding
    return transformer(hidden_states=x, timestep=t, encoder_hidden_states=embeds, return_dict=False)[0]


def pipeline_text(
    embeds: torch.Tensor, mask: torch.Tensor, neg_embeds: torch.Tensor, neg_mask: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Precomputed prompt features as `WanPipeline.__call__` takes them (no masks)."""
    del mask, neg_mask
    return dict(prompt_embeds=embeds, negative_prompt_embeds=neg_embeds)


WAN = ModelFamily(
    name="wan",
    title="Wan 2.1",
    hub_repo=WAN_REPO,
    preset="wan2.1-t2v-1.3b",
    temporal_compression=FAMILY_TEMPORAL_COMPRESSION["wan"],
    latent_channels=16,
    max_text_length=FAMILY_TEXT_LENGTH["wan"],
    layout=WAN_LAYOUT,
    blocks="blocks",
    qkv_streams={
        "self": ("attn1.to_q", "attn1.to_k", "attn1.to_v"),
        "cross": ("attn2.to_q", "attn2.to_k", "attn2.to_v"),
    },
    transformer_class=WanTransformer3DModel,
    vae_class=AutoencoderKLWan,
    text_encoder_class=UMT5EncoderModel,
    tokenizer_class=AutoTokenizer,
    pipeline_class=WanPipeline,
    scheduler_class=UniPCMultistepScheduler,
    tiny_pipeline=_tiny_pipeline,
    tiny_version=TINY_VERSION,
    encode_text=encode_text,
    timestep=timestep_from_noise_level,
    flow_target=flow_target,
    predict=predict_velocity,
    pipeline_text=pipeline_text,
)
