"""Configuration of the model layer: base model, LoRA triplet, training, sampling and Q/K/V analysis.

Every field carries a description because these models double as the parameter forms of the
Prefect deployments. Defaults are the paper's settings (METHOD.md §2-§5); each class has a
`demo()` preset with tiny values so the whole demo DAG runs in minutes on a 2-core CPU.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from dreamrelation.configbase import StrictConfig  # base of the config models: unknown keys are errors
from dreamrelation.data.video import FrameCount, FrameSide
from dreamrelation.data.world import WorldConfig


Family = Literal["mochi", "wan"]
#: What the cheap-to-import configs must know of each family (the rest is in `model.mochi` / `model.wan`):
#: the VAE's temporal compression T_c (METHOD.md §1, §9) and the text length its pipeline encodes prompts to.
FAMILY_TEMPORAL_COMPRESSION: dict[str, int] = {"mochi": 6, "wan": 4}
FAMILY_TEXT_LENGTH: dict[str, int] = {"mochi": 256, "wan": 512}
#: The profile that reads each family's real weights from `model_dir`.
WEIGHTS_PROFILE: dict[str, str] = {"mochi": "mochi-1", "wan": "wan2.1"}


class BaseModelConfig(StrictConfig):
    """Where the base model (Mochi-1 or Wan 2.1) comes from and where it runs (METHOD.md §1, §9)."""

    family: Family = Field(
        default="mochi",
        description="Base model family: 'mochi' (Mochi-1, joint-attention DiT, METHOD.md §1) or 'wan' (Wan 2.1 "
        "text-to-video, self- + cross-attention DiT, §9). Everything that differs per family (loading, text "
        "features, the flow convention, sampling) follows it.",
    )
    profile: Literal["demo", "mochi-1", "wan2.1"] = Field(
        default="demo",
        description="'demo': tiny randomly initialised models of the family's diffusers classes, built "
        "locally; 'mochi-1' / 'wan2.1': the real model of that family read from `model_dir`.",
    )
    model_dir: str | None = Field(
        default=None,
        description="Local folder in the diffusers layout (transformer/ vae/ text_encoder/ tokenizer/ scheduler/ "
        "model_index.json) of `genmo/mochi-1-preview` or `Wan-AI/Wan2.1-T2V-1.3B-Diffusers` / `-14B-Diffusers`. "
        "Required for the real-weights profiles; for 'demo' it overrides the tiny model location.",
    )
    models_cache: str = Field(
        default=".dreamrelation/models",
        description="Folder where the demo's tiny models are built and kept (and where a download "
        "goes when allowed).",
    )
    tiny_seed: int = Field(default=0, description="Seed of the tiny demo models' random weights.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="auto",
        description="Weight dtype of the base model: 'auto' is bfloat16 on GPU and float32 on CPU.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Torch device: 'auto' picks CUDA when available."
    )
    allow_download: bool = Field(
        default=False,
        description="Allow downloading the family's weights (genmo/mochi-1-preview, or Wan-AI/Wan2.1-T2V-1.3B-Diffusers) "
        "from the Hugging Face Hub when `model_dir` is missing. Off by default: nothing is ever downloaded at run time.",
    )

    hub_repo: str | None = Field(
        default=None,
        description="Hugging Face repository `allow_download` fetches; empty: the family's (genmo/mochi-1-preview, "
        "Wan-AI/Wan2.1-T2V-1.3B-Diffusers). Set it for another size, e.g. Wan-AI/Wan2.1-T2V-14B-Diffusers.",
    )

    added_later: ClassVar[dict[str, Any]] = {"family": "mochi", "hub_repo": None}

    @model_validator(mode="after")
    def _profile_fits_family(self) -> BaseModelConfig:
        if self.profile != "demo" and self.profile != WEIGHTS_PROFILE[self.family]:
            raise ValueError(
                f"profile {self.profile!r} reads another family's weights than family {self.family!r}: use "
                f"profile {WEIGHTS_PROFILE[self.family]!r} (or 'demo') with family {self.family!r}"
            )
        return self

    @property
    def temporal_compression(self) -> int:
        """T_c of the family's VAE (METHOD.md §1: 6 on Mochi-1; §9: 4 on Wan)."""
        return FAMILY_TEMPORAL_COMPRESSION[self.family]

    @classmethod
    def demo(cls) -> BaseModelConfig:
        """The tiny CPU preset."""
        return cls(profile="demo", device="cpu", dtype="float32")


#: Attention projections an adapter can sit on (both streams), as in the paper's Table 3.
Positions = Literal["V", "Q", "KV", "QK"]
#: Paper Table 3 rows: the subject position that goes with each relation position (METHOD.md §2).
TABLE3_SUBJECT_POSITIONS: dict[str, str] = {"V": "QK", "Q": "KV", "KV": "Q", "QK": "V"}


class LoraTripletConfig(StrictConfig):
    """Where the LoRAs go (METHOD.md §2, ablations of §6 / paper Table 3)."""

    mode: Literal["triplet", "direct"] = Field(
        default="triplet",
        description="'triplet': relation + subject1 + subject2 + FFN LoRAs (DreamRelation); "
        "'direct': the baseline, one LoRA on Q, K, V and out trained with the plain loss.",
    )
    rank: int = Field(default=16, ge=1, description="LoRA rank r of every adapter.")
    alpha: float = Field(default=16.0, gt=0, description="LoRA alpha; the update is scaled by alpha / r.")
    relation_positions: Positions = Field(
        default="QK",
        description="Projections carrying the relation LoRA, in both streams (paper Table 3; QK is "
        "the method).",
    )
    subject_positions: Positions | Literal["auto"] = Field(
        default="auto",
        description="Projections carrying the two subject LoRAs, in both streams. 'auto' pairs them "
        "with the relation position as in the paper's Table 3: relation V -> subject QK, Q -> KV, "
        "KV -> Q, QK -> V (the method). Relation and subject LoRAs never share a projection.",
    )
    use_relation: bool = Field(default=True, description="Train the relation LoRA (ablation switch).")
    use_subject: bool = Field(
        default=True, description="Train the two subject LoRAs (on `subject_positions`; ablation switch)."
    )
    use_ffn: bool = Field(
        default=True, description="Train the FFN LoRA on the attention output projections (ablation switch)."
    )
    relation_cross_attention: bool = Field(
        default=False,
        description="Wan only: also put the relation LoRA on the cross-attention query (attn2.to_q), so "
        "the relation adapter sees how video tokens read the text. Mochi's attention is joint and refuses it.",
    )

    added_later: ClassVar[dict[str, Any]] = {"relation_cross_attention": False}

    @model_validator(mode="after")
    def _something_to_train(self) -> LoraTripletConfig:
        if self.mode == "triplet" and not (self.use_relation or self.use_subject or self.use_ffn):
            raise ValueError("all adapter types are disabled: nothing to train")
        shared = set(self.relation_positions) & set(self.resolved_subject_positions())
        if self.mode == "triplet" and self.use_relation and self.use_subject and shared:
            raise ValueError(
                f"relation_positions={self.relation_positions} and subject_positions="
                f"{self.resolved_subject_positions()} share {''.join(sorted(shared))}: relation and subject "
                "LoRAs must sit on different projections (METHOD.md §2)"
            )
        return self

    def resolved_subject_positions(self) -> str:
        """The subject position: as given, or for 'auto' the Table 3 partner of the relation position."""
        if self.subject_positions == "auto":
            return TABLE3_SUBJECT_POSITIONS[self.relation_positions]
        return self.subject_positions

    @classmethod
    def demo(cls) -> LoraTripletConfig:
        """Rank 4 on the tiny demo transformer."""
        return cls(rank=4, alpha=4.0)


class SampleConfig(StrictConfig):
    """Sampling with the base model plus the inference LoRA (METHOD.md §5)."""

    steps: int = Field(default=64, ge=1, description="Denoising steps of the pipeline (Mochi-1: 64 Euler; Wan: 50 UniPC).")
    guidance: float = Field(default=6.0, ge=0, description="Classifier-free guidance scale (1 = off; Wan uses 5).")
    frames: FrameCount = Field(default=61, description="Frames to generate; T_c k + 1 (Mochi-1 6k+1, Wan 4k+1).")
    height: FrameSide = Field(default=480, description="Height in pixels (multiple of 16).")
    width: FrameSide = Field(default=848, description="Width in pixels (multiple of 16).")
    fps: float = Field(default=30.0, gt=0, description="Frame rate of the written video.")
    seed: int = Field(default=0, description="Seed of the initial noise.")
    negative_prompt: str = Field(default="", description="Negative prompt for guidance.")

    @classmethod
    def demo(cls) -> SampleConfig:
        """4 steps, 25 frames at 96x160: a second or two on CPU with the tiny models."""
        return cls(steps=4, frames=25, height=96, width=160)


class TrainConfig(StrictConfig):
    """The training run (METHOD.md §3-§5)."""

    #: Fields that only change what is reported, never what is trained: left out of `str(config)`
    #: and `key_dump()` at any value, so they never change the training artifact's key.
    not_in_key: ClassVar[frozenset[str]] = frozenset({"log_every"})
    added_later: ClassVar[dict[str, Any]] = {"idle_adapters": "frozen"}

    steps: int = Field(default=2400, ge=1, description="Optimizer steps (batch size 1).")
    min_clips: int = Field(
        default=4,
        ge=1,
        description="Refuse to train on fewer usable clips than this (clips left out by the latents or "
        "masks stage do not count); the error names each left-out clip and why.",
    )
    lr: float = Field(default=2e-4, gt=0, description="AdamW peak learning rate.")
    weight_decay: float = Field(default=0.01, ge=0, description="AdamW weight decay.")
    warmup_steps: int = Field(default=200, ge=0, description="Linear warmup steps, then cosine decay to 0.")
    lambda_m: float = Field(default=50.0, ge=0, description="Mask weight of the HMT loss (METHOD.md §3).")
    lambda_rcl: float = Field(default=0.01, ge=0, description="Weight of the contrastive loss (METHOD.md §4).")
    tau: float = Field(default=0.07, gt=0, description="Temperature of the contrastive loss.")
    n_pos: int = Field(default=4, ge=1, description="Positives drawn per step from the positive bank.")
    n_neg: int = Field(
        default=10, ge=0, description="Negatives per anchor: the current frames, topped up from the negative bank."
    )
    pos_bank_size: int = Field(default=10, ge=1, description="FIFO size of the positive (dynamics) bank.")
    neg_bank_size: int = Field(default=64, ge=0, description="FIFO size of the negative (frame feature) bank.")
    hmt: bool = Field(
        default=True,
        description="Hybrid mask training. Off: all adapters every step and an unweighted loss.",
    )
    rcl: bool = Field(default=True, description="Space-time relational contrastive loss.")
    rcl_branches: Literal["all", "relation"] = Field(
        default="all",
        description="HMT branches whose steps add the contrastive loss and feed its memory banks "
        "(METHOD.md §4). 'all' (the authors' code): every step, so on subject steps its gradient "
        "reaches the subject LoRAs + FFN; 'relation': only relation-branch steps.",
    )
    idle_adapters: Literal["frozen", "decay"] = Field(
        default="frozen",
        description="What an adapter HMT leaves out of a step gets (METHOD.md §3): 'frozen' (our Decision: no "
        "update at all) or 'decay' (the authors' code: a zero gradient, so AdamW still applies its momentum "
        "and weight decay).",
    )
    caption_dropout: float = Field(
        default=0.1, ge=0, le=1, description="Probability of training on the empty prompt (for CFG)."
    )
    sample_posterior: bool = Field(
        default=False,
        description="Draw z0 from the VAE posterior (mean + std * noise) instead of its mode.",
    )
    gradient_checkpointing: bool = Field(default=True, description="Recompute block activations in backward.")
    deterministic: bool = Field(
        default=False,
        description="Deterministic GPU training: torch.use_deterministic_algorithms (strict), "
        "CUBLAS_WORKSPACE_CONFIG=:4096:8 and attention without the cuDNN backend (flash / "
        "memory-efficient attention then use their deterministic backward). Makes resume bit-identical "
        "on the same GPU model and software; costs step time (docs/performance.md). CPU training is "
        "deterministic either way.",
    )
    checkpoint_every: int = Field(default=200, ge=1, description="Save a resumable checkpoint every N steps.")
    keep_last: int = Field(default=3, ge=1, description="Checkpoints kept on disk (oldest deleted first).")
    sample_every: int = Field(
        default=200, ge=0, description="Write a sample video every N steps with relation + FFN LoRAs (0 = off)."
    )
    sample_prompt: str = Field(
        default="A bear is shaking hands with a raccoon in a meadow.",
        description="Prompt of the periodic training samples.",
    )
    sample: SampleConfig = Field(default_factory=SampleConfig, description="Settings of the periodic samples.")
    lora: LoraTripletConfig = Field(default_factory=LoraTripletConfig, description="LoRA placement.")
    seed: int = Field(default=0, description="Seed of all training randomness (clip, group, noise, dropout).")
    log_every: int = Field(
        default=50,
        ge=1,
        description="Log the losses every N steps (and always the first and the last step); "
        "metrics.jsonl and the progress bar still get every step. Does not change the artifact key.",
    )

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            if name not in self.not_in_key:
                yield name, value

    def key_dump(self) -> dict[str, Any]:
        """`StrictConfig.key_dump()` without the reporting fields (`not_in_key`)."""
        return {name: value for name, value in super().key_dump().items() if name not in self.not_in_key}

    @classmethod
    def demo(cls) -> TrainConfig:
        """30 steps on the tiny model (about a second on 2 CPU cores) with two tiny sample videos."""
        return cls(
            steps=30,
            min_clips=1,
            lr=1e-3,
            warmup_steps=5,
            checkpoint_every=10,
            keep_last=2,
            sample_every=15,
            log_every=5,
            gradient_checkpointing=False,
            sample=SampleConfig.demo(),
            lora=LoraTripletConfig.demo(),
        )


class AnalysisConfig(StrictConfig):
    """Q/K/V subspace similarity (METHOD.md §7)."""

    transformer_dir: str | None = Field(
        default=None,
        description="Folder of a MochiTransformer3DModel (or of a pipeline with a transformer/ subfolder).",
    )
    rank: int = Field(default=16, ge=1, description="r: number of top left singular vectors compared.")
    device: str = Field(default="cpu", description="Torch device for the SVDs.")


# --------------------------------------------------------------------------- the toy base (issue 13 §2)


class VaePretrainConfig(StrictConfig):
    """The VAE phase (issue 13 §2)."""

    block_channels: list[int] = Field(
        default=[32, 32, 32, 32], description="Encoder/decoder block widths (multiples of 32: the VAE's 32-group norms)."
    )
    steps: int = Field(default=1500, ge=0, description="Optimizer steps.")
    full_frame_steps: int = Field(
        default=200, ge=0, description="Of those, the last ones on whole frames (the others on random crops)."
    )
    batch_size: int = Field(default=4, ge=1, description="Clip windows per step.")
    frames: FrameCount = Field(default=7, description="Frames per training window (6k+1).")
    crop_height: int = Field(default=32, ge=16, description="Crop height of the cropped steps (multiple of 16).")
    crop_width: int = Field(default=48, ge=16, description="Crop width of the cropped steps (multiple of 16).")
    lr: float = Field(default=1e-3, gt=0, description="AdamW learning rate (cosine decay after 50 warmup steps).")
    kl_weight: float = Field(default=1e-6, ge=0, description="Weight of the KL term (keeps the posterior tame).")
    stats_clips: int = Field(default=48, ge=2, description="Held-out clips whose latents give latents_mean/std.")
    checkpoint_every: int = Field(default=100, ge=1, description="Steps between checkpoints.")

    @field_validator("block_channels")
    @classmethod
    def _groups(cls, value: list[int]) -> list[int]:
        if len(value) != 4 or any(c <= 0 or c % 32 for c in value):
            raise ValueError(f"block_channels needs 4 positive multiples of 32, got {value}")
        return value


class DitPretrainConfig(StrictConfig):
    """The transformer phase (issue 13 §2; METHOD.md §1 objective)."""

    added_later: ClassVar[dict[str, Any]] = {
        "patch_size": 2, "noise_levels": "uniform", "subject_weight": 0.0, "subject_mask": "any",
        "subject_weight_max_noise": 1.0,
    }

    num_layers: int = Field(default=4, ge=1, description="MM-DiT blocks.")
    num_attention_heads: int = Field(default=4, ge=1, description="Attention heads.")
    attention_head_dim: int = Field(default=32, ge=2, description="Width of one head (even).")
    patch_size: int = Field(default=2, ge=1, le=2, description="Latent cells per token side (Mochi-1 uses 2).")
    noise_levels: Literal["uniform", "logit_normal"] = Field(
        default="uniform",
        description="How the training noise level s is drawn: uniform on [0, 1], or logit-normal "
        "(s = sigmoid(n), n ~ N(0, 1), as in SD3), which trains the middle levels, where the "
        "subjects' shapes are decided, more often.",
    )
    subject_weight: float = Field(
        default=0.0,
        ge=0,
        description="lambda of HMT's mask weighting (METHOD.md §3) in the pretraining loss: latent cells "
        "the subjects cover weigh 1 + lambda, the background 1. 0: the plain flow loss. The subjects "
        "carry about a sixth of the mask mass, so at 0 their shapes get a small share of the gradient.",
    )
    subject_mask: Literal["any", "fraction"] = Field(
        default="any",
        description="R for `subject_weight`: 'any' marks a latent cell the subjects touch at all (HMT's "
        "any-coverage, METHOD.md §3), so the background pixels of a partly covered cell weigh as much "
        "as the subject; 'fraction' weighs each cell by the share of its pixels the subjects cover. "
        "Both are averaged over the T_c frames of a latent frame.",
    )
    subject_weight_max_noise: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="`subject_weight` applies only to training samples whose noise level s is at most "
        "this (1: every sample). A loss weight that depends on the clean clip tilts what the model "
        "learns towards clips with more weighted cells (bigger subjects) wherever the noisy input "
        "leaves the clip uncertain, that is at high s, where layout and size are decided; at low s "
        "the input fixes the clip and the weight only shifts effort onto the subjects (at 0.5 the "
        "toy base read like the unweighted one, docs/study.md R12).",
    )
    clips: int = Field(default=1000, ge=1, description="World clips encoded once and trained on.")
    steps: int = Field(default=7500, ge=0, description="Optimizer steps.")
    batch_size: int = Field(default=16, ge=1, description="Clips per step.")
    lr: float = Field(default=5e-4, gt=0, description="AdamW peak learning rate (warmup, then cosine).")
    warmup_steps: int = Field(default=100, ge=0, description="Linear warmup steps.")
    caption_dropout: float = Field(default=0.1, ge=0, le=1, description="Probability of the empty prompt (CFG).")
    checkpoint_every: int = Field(default=200, ge=1, description="Steps between checkpoints.")


def toy_sample_config(world: WorldConfig, steps: int = 32, guidance: float = 4.0, seed: int = 0) -> SampleConfig:
    """Sampling settings for world-sized videos (frames, size and fps of the world)."""
    return SampleConfig(steps=steps, guidance=guidance, frames=world.frames, height=world.height,
                        width=world.width, fps=world.fps, seed=seed)


class GateConfig(StrictConfig):
    """How the toy base is checked after training (issue 13 §2 gates); nothing here changes the model."""

    reconstruction_clips: int = Field(default=60, ge=1, description="Held-out clips reconstructed by the VAE.")
    prompts: int = Field(default=30, ge=1, description="Held-out prompts (seen relations, new subject pairs) generated.")
    sample: SampleConfig = Field(
        default_factory=lambda: toy_sample_config(WorldConfig()), description="Sampling settings of the generations."
    )


class PretrainConfig(StrictConfig):
    """Everything that defines the toy base model; its fingerprint names the model folder."""

    added_later: ClassVar[dict[str, Any]] = {"t5_heads": "random"}

    world: WorldConfig = Field(default_factory=WorldConfig, description="Clip format and pools of the world.")
    held_out_relations: list[str] = Field(
        default=["push", "orbit"],
        description="Relations the base never sees (the study's targets): no clip, no caption verb.",
    )
    vae: VaePretrainConfig = Field(default_factory=VaePretrainConfig, description="VAE phase.")
    dit: DitPretrainConfig = Field(default_factory=DitPretrainConfig, description="Transformer phase.")
    gates: GateConfig = Field(default_factory=GateConfig, description="Checks measured after training.")
    t5_heads: Literal["random", "neighbours"] = Field(
        default="neighbours",
        description="Attention of the frozen random T5: 'random' (its heads barely mix words, so a "
        "kind word's features do not say which subject it belongs to) or 'neighbours' (each head "
        "reads one fixed neighbour word, so 'triangle' in 'dark red triangle' carries 'dark').",
    )
    seed: int = Field(default=0, description="Seed of every random choice (weights, data, noise).")

    @model_validator(mode="after")
    def _relations(self) -> PretrainConfig:
        unknown = [r for r in self.held_out_relations if r not in self.world.relations]
        if unknown:
            raise ValueError(f"held_out_relations: {unknown} not in the world's relations "
                             f"({', '.join(self.world.relations)})")
        if not self.seen_relations:
            raise ValueError("held_out_relations leaves no relation to pretrain on")
        return self

    @property
    def seen_relations(self) -> list[str]:
        return [r for r in self.world.relations if r not in self.held_out_relations]
