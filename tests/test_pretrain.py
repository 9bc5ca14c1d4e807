"""The toy base (issue 13 §2) and the study (§4), at micro sizes through the real code paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import MochiPipeline

from dreamrelation.data.world import RELATIONS, WorldConfig
from dreamrelation.evaluation.config import STUDY_METHODS, StudyConfig, study_train_config
from dreamrelation.model.config import PretrainConfig, VaePretrainConfig
from dreamrelation.model.family import missing_components
from dreamrelation.stages.pretrain import GATES_FILE, MODEL_DIR, pretrain_base
from dreamrelation.stages.study import aggregate, method_train_config, prompt_specs, run_study

MICRO = PretrainConfig(
    vae={"steps": 2, "full_frame_steps": 1, "batch_size": 1, "stats_clips": 2, "checkpoint_every": 1},
    dit={"clips": 4, "steps": 2, "batch_size": 2, "checkpoint_every": 1, "warmup_steps": 0},
    gates={"reconstruction_clips": 2, "prompts": 1, "sample": {"steps": 2, "frames": 25, "height": 64, "width": 96}},
)


@pytest.fixture(scope="module")
def toy_base(tmp_path_factory) -> Path:
    """The MICRO base, alone in its parent folder (the adoption test adds siblings there)."""
    folder = tmp_path_factory.mktemp("toy-bases") / "toy-a"
    pretrain_base(MICRO, folder)
    return folder


def test_micro_pretraining_writes_a_loadable_mochi_folder_and_gates(toy_base: Path) -> None:
    model_dir = toy_base / MODEL_DIR
    assert missing_components(model_dir) == []
    pipe = MochiPipeline.from_pretrained(model_dir, local_files_only=True)
    assert pipe.vae.config.latents_mean is not None and len(pipe.vae.config.latents_std) == 12
    assert pipe.transformer.pos_frequencies.abs().min() > 0  # RoPE frequencies set, not zeros
    pieces = pipe.tokenizer.tokenize("A dark red triangle is circling around a light blue dog.")
    assert "▁triangle" in pieces and "▁circling" in pieces  # world words are whole pieces
    gates = json.loads((toy_base / GATES_FILE).read_text())
    assert set(gates["gates"]) >= {"reconstruction relation accuracy", "generation relation accuracy"}
    assert all(isinstance(g["passed"], bool) for g in gates["gates"].values())
    assert gates["held_out_relations"] == ["push", "orbit"]


def test_pretraining_never_shows_the_held_out_verbs(toy_base: Path) -> None:
    data = torch.load(toy_base / "work" / "dit_data.pt", weights_only=False)
    for relation in MICRO.held_out_relations:
        assert not [c for c in data["captions"] if RELATIONS[relation].verb in c]
    assert data["latents"].shape[1:] == (12, 5, 8, 12)


def test_a_rerun_resumes_and_trains_nothing_again(toy_base: Path) -> None:
    result = pretrain_base(MICRO, toy_base)
    assert result["vae"]["resumed_from"] == MICRO.vae.steps and result["dit"]["resumed_from"] == MICRO.dit.steps


def test_bad_pretrain_config_is_named() -> None:
    with pytest.raises(ValueError, match=r"held_out_relations: \['dance'\] not in the world's relations"):
        PretrainConfig(held_out_relations=["dance"])
    with pytest.raises(ValueError, match="not in the world's relations"):  # loom is world v2's only
        PretrainConfig(held_out_relations=["loom"])
    with pytest.raises(ValueError, match="leaves no relation"):
        PretrainConfig(held_out_relations=list(RELATIONS))
    with pytest.raises(ValueError, match="multiples of 32"):
        VaePretrainConfig(block_channels=[32, 48, 64, 64])


def test_study_methods_differ_only_where_they_should() -> None:
    base = study_train_config()
    configs = {m: method_train_config(m, base, seed=2) for m in STUDY_METHODS if m != "base"}
    assert all(c.seed == 2 and c.steps == base.steps and c.lr == base.lr for c in configs.values())
    assert (configs["dreamrelation"].hmt, configs["dreamrelation"].rcl) == (True, True)
    assert configs["direct_lora"].lora.mode == "direct" and not configs["direct_lora"].hmt
    assert (configs["no_hmt"].hmt, configs["no_hmt"].rcl) == (False, True)
    assert (configs["no_rcl"].hmt, configs["no_rcl"].rcl) == (True, False)
    prompts = prompt_specs(StudyConfig(), WorldConfig(), "push")
    assert len(prompts) == 20 and all(s.kind != "person" for p in prompts for s in p.subjects)


def test_aggregate_means_and_spreads_by_hand() -> None:
    runs = [
        {"relation": "push", "method": "m", "seed": 0, "relation_accuracy": 1.0, "subject_fidelity": 0.5, "appearance_leakage": 0.0},
        {"relation": "push", "method": "m", "seed": 1, "relation_accuracy": 0.5, "subject_fidelity": 0.5, "appearance_leakage": 0.0},
        {"relation": "orbit", "method": "m", "seed": 0, "relation_accuracy": 0.0, "subject_fidelity": 1.0, "appearance_leakage": 1.0},
        {"relation": "orbit", "method": "m", "seed": 1, "relation_accuracy": 0.5, "subject_fidelity": 1.0, "appearance_leakage": 0.0},
    ]
    table = aggregate(runs, ["m"], ["push", "orbit"])
    assert table["push"]["m"]["relation_accuracy"] == {"mean": 0.75, "std": 0.25, "n": 2}
    # 'all': per seed the mean over relations (0.5 and 0.5), then mean/std over seeds
    assert table["all"]["m"]["relation_accuracy"] == {"mean": 0.5, "std": 0.0, "n": 2}
    assert table["all"]["m"]["appearance_leakage"] == {"mean": 0.25, "std": 0.25, "n": 2}


def test_micro_study_runs_every_method_through_training_and_the_judge(toy_base: Path, tmp_path: Path) -> None:
    cfg = StudyConfig(
        relations=["push"], methods=["dreamrelation", "direct_lora", "base"], seeds=[0], exemplars=4, prompts=2,
        train=study_train_config().model_copy(update={"steps": 2, "checkpoint_every": 1}),
        sample={"steps": 2, "frames": 25, "height": 64, "width": 96, "guidance": 2.0}, strip_prompts=1,
    )
    result = run_study(cfg, toy_base / MODEL_DIR, MICRO.world, tmp_path)
    assert set(result["table"]["push"]) == {"dreamrelation", "direct_lora", "base"}
    assert (tmp_path / "runs/push/dreamrelation/seed0/relation_lora.safetensors").is_file()
    assert not (tmp_path / "runs/push/base/seed0/relation_lora.safetensors").exists()
    for name in ("study.json", "study.md", "study.png", "strips/push-dreamrelation.png"):
        assert (tmp_path / name).is_file(), name
    judged = json.loads((tmp_path / "runs/push/direct_lora/seed0/judged.json").read_text())
    assert len(judged["videos"]) == 2 and judged["videos"][0]["relation"] == "push"


def test_cli_study_runs_pretraining_then_the_study_through_prefect(prefect_harness, tmp_path: Path) -> None:
    """`dreamrelation study -c micro.yaml`: both toy stages as flows, artifacts under the root, rerun reuses."""
    import yaml
    from typer.testing import CliRunner

    import dreamrelation.flows.toy  # noqa: F401  (bind Prefect's console handler outside CliRunner)
    from dreamrelation.flows.cli import app

    micro = {
        "root": str(tmp_path / "toy"),
        "pretrain": MICRO.model_dump(mode="json"),
        "study": {"relations": ["orbit"], "methods": ["dreamrelation", "base"], "seeds": [0], "exemplars": 4,
                  "prompts": 1, "strip_prompts": 1, "train": {"steps": 2, "checkpoint_every": 1},
                  "sample": {"steps": 2, "frames": 25, "height": 64, "width": 96}},
    }
    (tmp_path / "micro.yaml").write_text(yaml.safe_dump(micro))
    first = CliRunner().invoke(app, ["study", "-c", str(tmp_path / "micro.yaml")])
    assert first.exit_code == 0, first.output
    flat = " ".join(first.output.split())
    assert "toy-world pretrain_base built" in flat and "toy-world study built" in flat
    report = next((tmp_path / "toy" / "studies").glob("toy-*/study.md"))
    assert "| dreamrelation |" in report.read_text() and "| base |" in report.read_text()
    assert next((tmp_path / "toy" / "base").glob("toy-*/model/model_index.json")).is_file()
    again = CliRunner().invoke(app, ["study", "-c", str(tmp_path / "micro.yaml")])
    assert again.exit_code == 0 and again.output.count("reused") == 2, again.output


def test_a_partial_toy_override_keeps_the_other_defaults() -> None:
    """`-s study.train.steps=900` changes the steps only, not the study's lr, warmup or rank."""
    from dreamrelation.config import ConfigError, load_toy_config

    cfg = load_toy_config(None, ["study.train.steps=900", "pretrain.dit.steps=10"])
    expected = study_train_config()
    assert cfg.study.train.steps == 900 and cfg.pretrain.dit.steps == 10
    assert (cfg.study.train.lr, cfg.study.train.warmup_steps, cfg.study.train.lora.rank) == (
        expected.lr, expected.warmup_steps, expected.lora.rank)
    with pytest.raises(ConfigError, match="unknown key 'stpes'; did you mean 'steps'"):
        load_toy_config(None, ["study.train.stpes=900"])


def test_study_sampling_must_match_the_world_format() -> None:
    from dreamrelation.config import ConfigError, load_toy_config

    with pytest.raises(ConfigError, match=r"study.sample makes 25x64x96 videos but the world's clips are 37x64x96"):
        load_toy_config(None, ["pretrain.world.frames=37"])


def test_phase_loop_reports_every_step_and_logs_every_ten(tmp_path: Path) -> None:
    """Regression: the progress callback ran on an emptied list at every tenth step."""
    from dreamrelation.model.pretrain import _run_phase

    model = torch.nn.Linear(1, 1)
    seen: list[tuple[int, float]] = []
    result = _run_phase("toy", model, 12, 1e-2, 0, tmp_path / "c.pt", 5,
                        lambda step: (model(torch.ones(1, 1)) - 3.0).square().mean(), lambda k, v: seen.append((k, v)))
    assert [k for k, _ in seen] == list(range(1, 13))
    assert [k for k, _ in result.losses] == [10]
    assert result.losses[0][1] == pytest.approx(sum(v for _, v in seen[:10]) / 10)



def test_logit_normal_noise_levels_train_the_middle_more_often() -> None:
    """s = sigmoid(n), n ~ N(0, 1): P(0.25 < s < 0.75) = P(|n| < ln 3) = 0.7275; uniform: 0.5."""
    from dreamrelation.model.pretrain import draw_noise_levels

    for kind, middle in (("logit_normal", 0.7275), ("uniform", 0.5)):
        s = draw_noise_levels(kind, 200_000, torch.Generator().manual_seed(0))
        assert s.shape == (200_000,) and 0 < s.min() and s.max() < 1
        assert float(((s > 0.25) & (s < 0.75)).float().mean()) == pytest.approx(middle, abs=0.005)
    again = draw_noise_levels("logit_normal", 5, torch.Generator().manual_seed(3))
    assert torch.equal(again, draw_noise_levels("logit_normal", 5, torch.Generator().manual_seed(3)))


def test_patch_size_one_scales_the_spatial_rope_frequencies_to_the_token_grid() -> None:
    """64x96 frames: 4x6 tokens at patch 2, 8x12 at patch 1; spatial steps sqrt(192^2/24), sqrt(192^2/96)."""
    from dreamrelation.model.pretrain import build_models

    ratios = {}
    for patch in (2, 1):
        config = PretrainConfig(dit={"patch_size": patch})
        _, transformer, _, _ = build_models(config)
        assert transformer.config.patch_size == patch
        freqs = transformer.pos_frequencies.detach().abs()
        ratios[patch] = float(freqs[0].mean() / freqs[1].mean())
    assert ratios[2] == pytest.approx((192 * 192 / 24) ** 0.5, rel=1e-4)
    assert ratios[1] == pytest.approx((192 * 192 / 96) ** 0.5, rel=1e-4)


def _bench(name: str):
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_kind_swap_changes_every_kind_and_nothing_else() -> None:
    import numpy as np

    from dreamrelation.data.world import sample_specs

    bench = _bench("toy_identity")
    rng = np.random.default_rng(0)
    for spec in sample_specs(WorldConfig(), 20, relations=list(RELATIONS), seed=1):
        swapped = bench.swap_kinds(spec, rng)
        assert swapped.relation == spec.relation and swapped.seed == spec.seed
        for a, b in zip(spec.subjects, swapped.subjects):
            assert a.kind != b.kind and (a.contrast, a.colour, a.size) == (b.contrast, b.colour, b.size)


@torch.no_grad()
def test_kind_word_diagnostic_runs_on_a_toy_base(toy_base: Path) -> None:
    from dreamrelation.model.mochi import MOCHI
    from dreamrelation.model.pretrain import render_set

    bench = _bench("toy_identity")
    pipe = MOCHI.load_pipeline(toy_base / MODEL_DIR)
    clips = render_set(MICRO, 2, MICRO.seen_relations, phase=6)
    rows = bench.kind_word_use(pipe, MICRO, clips, levels=(0.5,), steps=2)
    assert set(rows) == {"s=0.5 own caption", "s=0.5 kinds swapped"}
    for row in rows.values():
        assert 0.0 <= row["kind"] <= 1.0 and row["flow loss"] > 0


def test_explained_share_by_hand(toy_base: Path) -> None:
    from dreamrelation.model.mochi import MOCHI
    from dreamrelation.model.pretrain import render_set

    bench = _bench("toy_identity")
    # groups a = {0, 2}, b = {10, 12}: total SS 104 about the mean 6, between-group SS 2*25 + 2*25
    x = np.array([[0.0], [2.0], [10.0], [12.0]])
    assert bench.explained_share(x, ["a", "a", "b", "b"]) == pytest.approx(100 / 104)
    assert bench.explained_share(x, ["a", "b", "a", "b"]) == pytest.approx(4 / 104)  # means 5 and 7
    shares = bench.latent_variance_shares(MOCHI.load_pipeline(toy_base / MODEL_DIR), render_set(MICRO, 3, MICRO.seen_relations, 6))
    assert set(shares) == {"kind", "contrast", "colour", "kind and contrast"}
    assert all(0.0 <= v <= 1.0 for v in shares.values()) and shares["kind and contrast"] >= shares["kind"]


def test_a_base_that_differs_only_in_its_dit_adopts_the_finished_vae_and_training_set(toy_base: Path) -> None:
    """`toy_base` (MICRO, built from scratch: nothing adopted) is "toy-a"; other bases go beside it."""
    assert json.loads((toy_base / GATES_FILE).read_text())["adopted_phases"] == {}
    tmp_path = toy_base.parent

    longer = MICRO.model_copy(update={"dit": MICRO.dit.model_copy(update={"steps": 3})})
    second = pretrain_base(longer, tmp_path / "toy-b")
    assert second["adopted_phases"] == {"vae": "toy-a", "dit_data": "toy-a"}
    assert second["vae"]["resumed_from"] == MICRO.vae.steps and second["dit"]["resumed_from"] == 0
    assert torch.equal(torch.load(tmp_path / "toy-a/work/dit_data.pt")["latents"],
                       torch.load(tmp_path / "toy-b/work/dit_data.pt")["latents"])

    # Another DiT shape draws another random T5, so the captions' features differ: VAE only.
    wider = MICRO.model_copy(update={"dit": MICRO.dit.model_copy(update={"num_attention_heads": 8})})
    assert pretrain_base(wider, tmp_path / "toy-c")["adopted_phases"] == {"vae": "toy-a"}
    # Another VAE setting: nothing to adopt, the sentinel of the finished base is untouched.
    sentinel = (tmp_path / "toy-a/work/vae.pt").read_bytes()
    other_vae = MICRO.model_copy(update={"vae": MICRO.vae.model_copy(update={"lr": 5e-4})})
    third = pretrain_base(other_vae, tmp_path / "toy-d")
    assert third["adopted_phases"] == {} and third["vae"]["resumed_from"] == 0
    assert (tmp_path / "toy-a/work/vae.pt").read_bytes() == sentinel


def test_word_features_give_each_word_one_vector_whatever_its_neighbours() -> None:
    from dreamrelation.model.mochi import encode_text
    from dreamrelation.model.pretrain import world_tokenizer

    bench = _bench("toy_word_features")
    tokenizer = world_tokenizer()
    words = bench.WordFeatures(len(tokenizer), 32, seed=0)
    embeds, mask = encode_text(tokenizer, words, ["A dark red square is hugging a light blue dog.",
                                                  "A light green circle is following a dark red square."])
    square = tokenizer.convert_tokens_to_ids("▁square")
    ids = tokenizer(["A dark red square is hugging a light blue dog.",
                     "A light green circle is following a dark red square."]).input_ids
    first, second = ids[0].index(square), ids[1].index(square)
    assert torch.equal(embeds[0, first], embeds[1, second]) and embeds.shape[-1] == 32
    assert int(mask[0].sum()) == len(ids[0]) and words.dtype == torch.float32
    assert torch.equal(bench.WordFeatures(len(tokenizer), 32, seed=0).embed.weight, words.embed.weight)


def test_neighbour_heads_put_the_contrast_word_into_the_kind_word() -> None:
    """t5_heads="neighbours": 'triangle' carries 'dark' two words back, and not a word far away."""
    from dreamrelation.model.mochi import encode_text
    from dreamrelation.model.pretrain import NEIGHBOUR_OFFSETS, build_models

    base = "A {} red triangle is approaching a light blue {}."
    change, shares = {}, {}
    for heads in ("random", "neighbours"):
        _, _, t5, tokenizer = build_models(PretrainConfig(t5_heads=heads))
        features = {words: encode_text(tokenizer, t5, [base.format(*words)])[0][0]
                    for words in (("dark", "dog"), ("light", "dog"), ("dark", "circle"))}
        at = tokenizer(base.format("dark", "dog")).input_ids.index(tokenizer.convert_tokens_to_ids("▁triangle"))

        def moved(edit: tuple[str, str]) -> float:
            reference = features[("dark", "dog")][at]
            return float((features[edit][at] - reference).norm() / reference.norm())

        change[heads] = (moved(("light", "dog")), moved(("dark", "circle")))
        if heads == "neighbours":
            bias = t5.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight
            assert int((bias != 0).sum()) == len(NEIGHBOUR_OFFSETS) == t5.config.num_heads
        shares[heads] = _bench("toy_identity").kind_word_shares(tokenizer, t5, PretrainConfig(), n=200)
    near, far = change["neighbours"]
    assert near > 0.5 and far < 0.05, change  # contrast word 2 back: big; kind word 8 ahead: none
    assert change["random"][0] < 0.3, change  # the random T5 barely binds
    # over many captions: the random T5's kind word says nothing of its phrase's contrast
    assert shares["random"]["its phrase's contrast"] < 0.02 < 0.08 < shares["neighbours"]["its phrase's contrast"]
    assert shares["random"]["its kind"] > 0.5 and shares["neighbours"]["its kind"] > 0.2


def test_export_writes_a_float16_copy_and_never_replaces_a_foreign_folder(toy_base: Path, tmp_path: Path) -> None:
    """issue 22 §1: `dreamrelation pretrain --export DIR` writes the shipped copy (float16, with key and gates)."""
    from safetensors import safe_open

    from dreamrelation.model.mochi import MOCHI
    from dreamrelation.model.family import TOY_BASE_FILE
    from dreamrelation.stages.pretrain import ExportError, export_base

    out = export_base(toy_base, tmp_path / "toy-base", "abc123")
    assert json.loads((out / TOY_BASE_FILE).read_text())["fingerprint"] == "abc123"
    assert set(json.loads((out / GATES_FILE).read_text())) == {"seen_relations", "held_out_relations", "measured", "gates"}
    with safe_open(str(out / MODEL_DIR / "transformer" / "diffusion_pytorch_model.safetensors"), "pt") as handle:
        assert {handle.get_tensor(k).dtype for k in handle.keys()} == {torch.float16}
    original, shipped = MOCHI.load_transformer(toy_base / MODEL_DIR), MOCHI.load_transformer(out / MODEL_DIR)  # cast to float32
    for (name, a), (_, b) in zip(original.state_dict().items(), shipped.state_dict().items()):
        assert b.dtype == torch.float32 and torch.allclose(a, b, rtol=1e-3, atol=1e-4), name
    export_base(toy_base, out, "def456")  # an earlier export is replaced
    assert json.loads((out / TOY_BASE_FILE).read_text())["fingerprint"] == "def456"
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "sentinel.txt").write_text("keep me")
    with pytest.raises(ExportError, match="is not an earlier toy-base export"):
        export_base(toy_base, foreign, "abc123")
    assert [p.name for p in foreign.iterdir()] == ["sentinel.txt"] and (foreign / "sentinel.txt").read_text() == "keep me"


def test_subject_masks_cover_exactly_the_cells_the_rendered_subjects_touch() -> None:
    from dreamrelation.model.pretrain import subject_masks, training_clips

    clips = training_clips(MICRO)
    masks = subject_masks(MICRO, [c.caption for c in clips])
    frames, height, width = clips[0].masks.shape[0], MICRO.world.height, MICRO.world.width
    assert masks.shape == (len(clips), (frames - 1) // 6 + 1, height // 8, width // 8)
    for clip, mask in zip(clips, masks.numpy()):
        pixels = clip.masks.any(axis=1)  # (T, H, W): either subject
        cells = pixels.reshape(frames, height // 8, 8, width // 8, 8).any(axis=(2, 4))
        assert np.array_equal(mask[0], cells[0].astype(np.float32))  # latent frame 0 <- frame 0
        assert np.allclose(mask[1], cells[1:7].mean(axis=0))  # latent frame 1 <- frames 1..6
    with pytest.raises(RuntimeError, match="dit_data.pt"):
        subject_masks(MICRO, ["another caption"] * len(clips))
    # 'fraction': the share of each cell's pixels either subject covers, averaged the same way.
    fraction = MICRO.model_copy(update={"dit": MICRO.dit.model_copy(update={"subject_mask": "fraction"})})
    shares = subject_masks(fraction, [c.caption for c in clips]).numpy()
    for clip, share in zip(clips, shares):
        pixels = clip.masks.any(axis=1).reshape(frames, height // 8, 8, width // 8, 8).mean(axis=(2, 4))
        np.testing.assert_allclose(share[0], pixels[0], rtol=1e-6)
        np.testing.assert_allclose(share[1], pixels[1:7].mean(axis=0), rtol=1e-5)
    assert 0 < shares.sum() < masks.numpy().sum()  # partly covered cells weigh less than under 'any'


def test_subject_weight_weighs_the_subjects_cells_and_leaves_the_key_alone_at_zero(toy_base: Path, tmp_path: Path) -> None:
    from dreamrelation.model.pretrain import DitData, build_models, train_dit

    assert not {"subject_weight", "subject_mask", "subject_weight_max_noise"} & set(json.dumps(MICRO.key_dump()).split('"'))
    data = DitData(**torch.load(toy_base / "work/dit_data.pt"))
    first = {}
    runs = {"plain": (0.0, 1.0), "weighted": (4.0, 1.0), "gated": (4.0, 1e-9)}
    for name, (weight, max_noise) in runs.items():
        dit = MICRO.dit.model_copy(update={"steps": 1, "subject_weight": weight, "subject_weight_max_noise": max_noise})
        cfg = MICRO.model_copy(update={"dit": dit})
        transformer = build_models(cfg)[1]  # same seed: the same initial DiT for all
        work = tmp_path / name
        work.mkdir()
        train_dit(transformer, data, cfg, work, on_step=lambda _s, loss: first.setdefault(name, loss))
    assert "subject_weight" in json.dumps(cfg.key_dump())
    # The same batch, noise and model; every weight is >= 1 and the subjects' cells weigh 5.
    assert first["weighted"] > first["plain"] > 0
    # No sample's noise level is below 1e-9, so the gated weight leaves every cell at 1.
    assert first["gated"] == first["plain"]
