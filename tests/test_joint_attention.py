"""The faster joint attention of the toy pretraining gives the stock Mochi numbers (model.joint_attention)."""

from __future__ import annotations

import torch
from diffusers import MochiTransformer3DModel
from diffusers.models.attention_processor import MochiAttnProcessor2_0

from dreamrelation.model.joint_attention import BatchedMochiAttnProcessor, batched_joint_attention, trim_text_padding


def test_trim_text_padding_cuts_to_the_longest_valid_caption():
    embeds = torch.arange(2 * 5 * 1, dtype=torch.float32).reshape(2, 5, 1)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=torch.bool)
    cut, cut_mask = trim_text_padding(embeds, mask)
    assert cut.shape == (2, 3, 1) and cut_mask.tolist() == [[True, True, False], [True, True, True]]
    assert torch.equal(cut, embeds[:, :3])
    empty, _ = trim_text_padding(embeds, torch.zeros(2, 5, dtype=torch.bool))  # all padding: keep one
    assert empty.shape == (2, 1, 1)


def _tiny_dit() -> MochiTransformer3DModel:
    torch.manual_seed(0)
    model = MochiTransformer3DModel(patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=2,
                                    pooled_projection_dim=16, in_channels=4, text_embed_dim=16, time_embed_dim=16)
    with torch.no_grad():
        model.pos_frequencies.normal_(0, 0.3)  # non-zero rotary, as in a trained model
    return model


def _forward(model, x, embeds, mask, t):
    return model(hidden_states=x, encoder_hidden_states=embeds, timestep=t, encoder_attention_mask=mask,
                 return_dict=False)[0]


def test_batched_processor_and_trimming_match_the_stock_path():
    model = _tiny_dit()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 2, 4, 6, generator=g)
    embeds = torch.randn(3, 12, 16, generator=g)
    mask = torch.zeros(3, 12, dtype=torch.bool)
    for row, valid in enumerate((5, 2, 7)):  # captions of different lengths, right-padded
        mask[row, :valid] = True
    t = torch.tensor([10.0, 500.0, 990.0])

    x.requires_grad_(True)
    stock = _forward(model, x, embeds, mask, t)
    (stock_grad,) = torch.autograd.grad(stock.square().sum(), x)
    with batched_joint_attention(model):
        assert all(isinstance(b.attn1.processor, BatchedMochiAttnProcessor) for b in model.transformer_blocks)
        fast = _forward(model, x, *trim_text_padding(embeds, mask), t)
        (fast_grad,) = torch.autograd.grad(fast.square().sum(), x)
    assert torch.allclose(stock, fast, atol=1e-5) and torch.allclose(stock_grad, fast_grad, atol=1e-4)
    assert all(isinstance(b.attn1.processor, MochiAttnProcessor2_0) for b in model.transformer_blocks)

    # the padding really is ignored: garbage in the padded rows changes nothing
    noisy = embeds.clone()
    noisy[~mask] = 100.0
    with batched_joint_attention(model):
        assert torch.allclose(_forward(model, x, noisy, mask, t), stock, atol=1e-5)


def test_processors_come_back_after_an_error():
    model = _tiny_dit()
    try:
        with batched_joint_attention(model):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert all(isinstance(b.attn1.processor, MochiAttnProcessor2_0) for b in model.transformer_blocks)
