"""The method on a tiny Wan 2.1 of the real classes (issue 23): text features, training, export, sampling.

The conventions themselves are measured against `WanPipeline` in tests/test_wan_conventions.py;
here they are used through the family (`WAN`) the way the pipeline's stages use them.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch
from conftest_model import CAPTION, Text, cpu_base, make_clips, tiny_train_config, train_denoiser
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from safetensors import safe_open
from transformers import UMT5EncoderModel

from dreamrelation.model import lora
from dreamrelation.model import train as T
from dreamrelation.model.config import BaseModelConfig, LoraTripletConfig, TrainConfig
from dreamrelation.model.families import family_of, resolve_model_dir
from dreamrelation.model.family import LatentNorm, denormalize_latents
from dreamrelation.model.sample import LoraFileError, load_inference_pipeline
from dreamrelation.model import mochi
from dreamrelation.model.mochi import MOCHI
from dreamrelation.model.wan import WAN

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wan-demo's tiny Wan (seed 0), as `resolve_model_dir` builds it under the models cache."""
    cache = tmp_path_factory.getbasetemp() / "models"
    return resolve_model_dir(BaseModelConfig(family="wan", models_cache=str(cache), device="cpu", dtype="float32"))


@pytest.fixture(scope="module")
def wan_text(wan_dir: Path) -> Text:
    tokenizer, encoder = WAN.load_text_encoder(wan_dir)
    embeds, mask = WAN.encode_text(tokenizer, encoder, [CAPTION, ""], WAN.max_text_length)
    return Text(embeds[0], mask[0], (embeds[1], mask[1]))


@pytest.fixture(scope="module")
def wan_norm(wan_dir: Path) -> LatentNorm:
    return LatentNorm.from_config(WAN.load_vae(wan_dir).config)


def wan_clips(text: Text, n: int = 2) -> list[T.TrainClip]:
    return make_clips(text, n=n, channels=WAN.latent_channels)


def test_tiny_wan_is_the_real_classes_in_the_diffusers_layout(wan_dir: Path) -> None:
    assert wan_dir.name == "tiny-wan-v1-seed0" and family_of(BaseModelConfig(family="wan")) is WAN
    pipe = WanPipeline.from_pretrained(wan_dir, local_files_only=True)
    assert isinstance(pipe.transformer, WanTransformer3DModel) and isinstance(pipe.vae, AutoencoderKLWan)
    assert isinstance(pipe.text_encoder, UMT5EncoderModel) and isinstance(pipe.scheduler, UniPCMultistepScheduler)
    assert pipe.scheduler.config.prediction_type == "flow_prediction" and pipe.scheduler.config.flow_shift == 3.0
    assert pipe.vae.config.z_dim == WAN.latent_channels and pipe.vae.config.scale_factor_temporal == 4
    assert pipe.transformer.config.text_dim == pipe.text_encoder.config.d_model


def test_encode_text_is_what_wan_pipeline_feeds_the_transformer(wan_dir: Path) -> None:
    """Features cut at each prompt's true length and zero-padded to 512, as `WanPipeline.encode_prompt` makes them."""
    tokenizer, encoder = WAN.load_text_encoder(wan_dir)
    prompts = ["A bear is shaking hands with a raccoon in a meadow.", ""]
    embeds, mask = WAN.encode_text(tokenizer, encoder, prompts, WAN.max_text_length)
    pipe = WanPipeline.from_pretrained(wan_dir, local_files_only=True)
    expected, _ = pipe.encode_prompt(prompts, do_classifier_free_guidance=False, max_sequence_length=512)
    assert embeds.shape == expected.shape == (2, 512, pipe.text_encoder.config.d_model)
    assert torch.allclose(embeds, expected, atol=1e-6)
    lengths = mask.sum(dim=1)
    assert lengths[1] == 1 and lengths[0] > 10  # "" is just </s>
    assert embeds[0, lengths[0]:].abs().sum() == 0 and embeds[0, lengths[0] - 1].abs().sum() > 0


def test_latent_normalisation_is_the_inverse_of_wan_pipelines_decode(wan_norm: LatentNorm, wan_dir: Path) -> None:
    """WanPipeline decodes z * std + mean (no scaling factor; METHOD.md §9)."""
    vae = WAN.load_vae(wan_dir)
    z = torch.randn(1, 16, 2, 3, 3)
    mean = torch.tensor(vae.config.latents_mean).view(1, 16, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, 16, 1, 1, 1)
    assert wan_norm.scaling_factor == 1.0
    assert torch.allclose(denormalize_latents(z, wan_norm), z * std + mean, atol=1e-6)


def test_hmt_and_rcl_train_on_wan_and_resume_bit_identically(wan_dir: Path, wan_text: Text, wan_norm, tmp_path: Path) -> None:
    """The whole loop (HMT groups, RCL, checkpoints) on Wan: 3 steps + resume 3 steps == 6 steps."""
    cfg = tiny_train_config(steps=6, hmt=True, rcl=True)
    clips = wan_clips(wan_text)
    once = T.train(clips, wan_text.empty, wan_norm, cfg, tmp_path / "once", cpu_base(wan_dir, "wan"))
    T.train(clips, wan_text.empty, wan_norm, cfg, tmp_path / "twice", cpu_base(wan_dir, "wan"), stop_at=3)
    twice = T.train(clips, wan_text.empty, wan_norm, cfg, tmp_path / "twice", cpu_base(wan_dir, "wan"))
    assert twice.resumed_from == 3 and once.final_step == twice.final_step == 6
    records = T.read_metrics(tmp_path / "once" / "metrics.jsonl")
    assert {r["group"] for r in records} <= {"relation", "subject1", "subject2"}
    assert any(r["loss_rcl"] is not None for r in records)
    with safe_open(str(once.lora_path), "pt") as a, safe_open(str(twice.lora_path), "pt") as b:
        assert set(a.keys()) == set(b.keys()) and all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())
    names = {row["adapter"] for row in once.parameter_table}
    assert names == {"relation", "subject1", "subject2", "ffn"}


def test_export_loads_fully_in_wan_pipeline_and_reproduces_the_trained_model(
    wan_dir: Path, wan_text: Text, wan_norm, tmp_path: Path
) -> None:
    cfg = tiny_train_config(steps=4, hmt=False, rcl=False, lora=LoraTripletConfig(rank=4, alpha=8.0))
    state = T.build_state(cfg, WAN, wan_dir, CPU, torch.float32)
    clips = wan_clips(wan_text)
    for _ in range(cfg.steps):
        T.train_step(state, clips, wan_text.empty, wan_norm, cfg)
    path = lora.export_inference_lora(state.transformer, tmp_path / T.LORA_FILE)
    with safe_open(str(path), "pt") as handle:
        keys = list(handle.keys())
    assert keys and all(k.startswith("transformer.blocks.") and ".attn1." in k for k in keys)
    assert not any(".to_v." in k for k in keys)  # the subject adapters are never exported

    lora.activate_adapters(state.transformer, ["relation", "ffn"])
    state.transformer.eval()
    pipe = load_inference_pipeline(WAN, wan_dir, path)
    loaded = [name for name, _ in pipe.transformer.named_modules() if name.endswith("lora_A.relation_lora")]
    assert len(loaded) == len([k for k in keys if ".lora_A." in k])  # every exported matrix found its layer
    base = load_inference_pipeline(WAN, wan_dir, None).transformer
    g = torch.Generator().manual_seed(3)
    x, t = torch.randn(1, 16, 3, 4, 4, generator=g), torch.tensor([600.0])
    with torch.no_grad():
        trained = WAN.predict(state.transformer, x, t, wan_text.embeds[None], wan_text.mask[None])
        reloaded = WAN.predict(pipe.transformer, x, t, wan_text.embeds[None], wan_text.mask[None])
        untouched = WAN.predict(base, x, t, wan_text.embeds[None], wan_text.mask[None])
    assert torch.allclose(trained, reloaded, atol=1e-5)
    assert (trained - untouched).abs().max() > 1e-3  # the LoRA changed the model, so the match means something


def test_a_foreign_lora_is_one_clear_error(wan_dir: Path, tiny_dir: Path, text: Text, vae_config, tmp_path: Path) -> None:
    """A Mochi LoRA given to Wan names the module it targets and the file."""
    cfg = tiny_train_config(steps=1)
    state = T.build_state(cfg, MOCHI, tiny_dir, CPU, torch.float32)
    T.train_step(state, make_clips(text), text.empty, vae_config, cfg)
    lora.activate_adapters(state.transformer, ["relation", "ffn"])
    mochi_lora = lora.export_inference_lora(state.transformer, tmp_path / "mochi.safetensors")
    with pytest.raises(LoraFileError, match=r"mochi\.safetensors targets transformer_blocks\.0\.attn1\..* which does not exist in this Wan 2\.1 model "
                       r"\(.*\): a LoRA for another base model\?"):
        load_inference_pipeline(WAN, wan_dir, mochi_lora)


# --------------------------------------------------------------------------- the overfit test


_DIRECTION = torch.randn(16, 1, 1, 1, generator=torch.Generator().manual_seed(42))


@pytest.fixture(scope="module")
def pretrained_wan(wan_dir: Path, wan_text: Text, tmp_path_factory) -> Path:
    """The tiny Wan trained briefly as a denoiser, with Wan's convention spelled out independently
    of the family module: x = (1 - s) z0 + s eps, t = 1000 s, target eps - z0 (METHOD.md §9)."""
    folder = tmp_path_factory.mktemp("pretrained") / "wan"
    shutil.copytree(wan_dir, folder)
    model = WAN.load_transformer(folder)

    def wan_loss(model: torch.nn.Module, z0: torch.Tensor, eps: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        x = (1 - s.view(-1, 1, 1, 1, 1)) * z0 + s.view(-1, 1, 1, 1, 1) * eps
        v = model(x, 1000 * s, wan_text.embeds.expand(len(s), -1, -1), return_dict=False)[0]
        return (v - (eps - z0)).square().mean()

    train_denoiser(model, _DIRECTION, 400, wan_loss)
    model.save_pretrained(folder / "transformer")
    return folder


#: The convention the training loop is given: Wan's own, or Mochi's target / timestep in its place.
CONVENTIONS = {
    "wan": {},
    "mochi target z0 - eps": {"flow_target": mochi.flow_target},
    "mochi timestep 1000 (1 - s)": {"timestep": mochi.timestep_from_noise_level},
}


def test_convention_overfit_one_clip_then_sample_through_wan_pipeline(
    pretrained_wan: Path, wan_text: Text, wan_norm: LatentNorm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """METHOD.md §1 (a) on Wan: a LoRA overfit on one clip by the training loop, sampled by
    `WanPipeline` (UniPC, guidance 1), lands under half the base model's distance to the clip;
    trained with Mochi's target or timestep in place of Wan's, it lands at least 1.5x farther,
    so the check tells the conventions apart."""
    clip_z = (-2.0 * _DIRECTION).expand(16, 3, 4, 4)  # normalized latents of "the clip"
    clip = wan_clips(wan_text, n=1)[0]
    clip.latent_mean, clip.latent_masks = denormalize_latents(clip_z, wan_norm).clone(), torch.zeros(3, 3, 4, 4)
    cfg = TrainConfig(
        steps=200, lr=1e-2, warmup_steps=20, caption_dropout=0.0, hmt=False, rcl=False, checkpoint_every=200,
        sample_every=0, gradient_checkpointing=False, lora=LoraTripletConfig(rank=16, alpha=16),
    )

    def distance(lora_path: Path | None) -> float:
        pipe = load_inference_pipeline(WAN, pretrained_wan, lora_path)
        frames = pipe(
            prompt_embeds=wan_text.embeds.expand(4, -1, -1),  # 4 noise draws
            height=32, width=32, num_frames=9, num_inference_steps=16, guidance_scale=1.0,
            generator=torch.Generator().manual_seed(7), output_type="latent",
        ).frames
        return (frames - clip_z).square().mean().item()

    base = distance(None)
    ratios = {}
    for name, change in CONVENTIONS.items():
        monkeypatch.setattr(T, "family_of_model", lambda model, change=change: dataclasses.replace(WAN, **change))
        result = T.train([clip], wan_text.empty, wan_norm, cfg, tmp_path / str(len(ratios)), cpu_base(pretrained_wan, "wan"))
        ratios[name] = distance(result.lora_path) / base
    print("wan overfit, MSE to the clip / the base's:", {name: round(r, 3) for name, r in ratios.items()})
    assert ratios["wan"] < 0.5, ratios  # measured 0.38
    for name in list(CONVENTIONS)[1:]:
        assert ratios[name] > 1.5 * ratios["wan"], ratios  # measured 3.65 (target) and 0.80 (timestep)
