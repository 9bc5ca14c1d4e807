"""The training loop (METHOD.md §1, §3-§5): conventions, HMT, checkpoints, resume, errors."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from conftest_model import Text, cpu_base, make_clips, tiny_train_config, train_denoiser
from safetensors.torch import load_file

from dreamrelation.model import lora
from dreamrelation.model import mochi
from dreamrelation.model import train as T
from dreamrelation.model.config import LoraTripletConfig, TrainConfig
from dreamrelation.model.family import denormalize_latents, normalize_latents
from dreamrelation.model.mochi import MOCHI
from dreamrelation.model.sample import load_inference_pipeline

# --------------------------------------------------------------------------- conventions


def test_rectified_flow_helpers() -> None:
    z0, eps = torch.full((1, 12, 2, 2, 2), 3.0), torch.full((1, 12, 2, 2, 2), -1.0)
    assert torch.equal(T.add_noise(z0, eps, torch.tensor([0.0])), z0)
    assert torch.equal(T.add_noise(z0, eps, torch.tensor([1.0])), eps)
    assert torch.allclose(T.add_noise(z0, eps, torch.tensor([0.25])), torch.full_like(z0, 2.0))
    assert torch.equal(mochi.flow_target(z0, eps), torch.full_like(z0, 4.0))
    assert mochi.timestep_from_noise_level(torch.tensor(1.0)) == 0  # pure noise is t = 0
    assert mochi.timestep_from_noise_level(torch.tensor(0.0)) == 1000
    assert mochi.noise_level_from_timestep(torch.tensor(250.0)) == 0.75


def test_trajectory_of_the_pipeline_matches_the_training_noising(tiny_dir: Path, text: Text) -> None:
    """METHOD.md §1 (b): feed the pipeline the exact velocity z0 - eps of a known pair; every
    (x_i, t_i) it gives the transformer must be the training code's x_s at s(t_i)."""
    pipe = MOCHI.load_pipeline(tiny_dir)
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(1, 12, 3, 4, 4, generator=g)
    eps = torch.randn(1, 12, 3, 4, 4, generator=g)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def record(module, args, kwargs):
        seen.append((kwargs["hidden_states"].clone(), kwargs["timestep"].clone()))

    def oracle(module, args, kwargs, output):
        return (mochi.flow_target(z0, eps),)

    pipe.transformer.register_forward_pre_hook(record, with_kwargs=True)
    pipe.transformer.register_forward_hook(oracle, with_kwargs=True)
    out = pipe(
        prompt_embeds=text.embeds[None],
        prompt_attention_mask=text.mask[None],
        latents=eps,
        height=32,
        width=32,
        num_frames=13,
        num_inference_steps=8,
        guidance_scale=1.0,
        output_type="latent",
    ).frames

    assert len(seen) == 8 and seen[0][1].item() == 0.0  # first call: t = 0 on pure noise
    assert torch.equal(seen[0][0], eps)
    for x, t in seen:
        s = mochi.noise_level_from_timestep(t)
        assert torch.allclose(mochi.timestep_from_noise_level(s), t)  # the training code's mapping
        assert torch.allclose(x, T.add_noise(z0, eps, s), atol=1e-5), f"t={t.item()}"
    assert torch.allclose(out, z0, atol=1e-5)


def test_warmup_then_cosine() -> None:
    factors = [T.lr_factor(k, 4, 20) for k in range(20)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0 and all(a > b for a, b in zip(factors[4:], factors[5:]))
    assert 0 < factors[-1] < 0.01
    assert T.lr_factor(0, 0, 10) == 1.0


# --------------------------------------------------------------------------- HMT and the update


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in lora.lora_parameters(model).items()}


def test_idle_adapters_stay_bit_identical(tiny_dir: Path, text: Text, vae_config) -> None:
    cfg = tiny_train_config(steps=12, weight_decay=0.1)
    clips = make_clips(text)
    state = T.build_state(cfg, MOCHI, tiny_dir, torch.device("cpu"), torch.float32)
    groups, touched = [], set()
    for _ in range(cfg.steps):
        before = _snapshot(state.transformer)
        record = T.train_step(state, clips, text.empty, vae_config, cfg)
        after = _snapshot(state.transformer)
        active = set(lora.select_lora_group(record["group"]))
        for name in before:
            adapter = lora.adapter_of(name)
            if adapter in active:
                touched.add(name)
            else:
                assert torch.equal(before[name], after[name]), f"{name} moved in a {record['group']} step"
        changed = {lora.adapter_of(n) for n in before if not torch.equal(before[n], after[n])}
        assert changed == active
        groups.append(record["group"])
    assert set(groups) == {"relation", "subject1", "subject2"}
    # no optimizer state (momentum) for a parameter before its first active step
    params = lora.lora_parameters(state.transformer)
    for name, param in params.items():
        assert (param in state.optimizer.state) == (name in touched)


def test_idle_adapters_decay_as_in_the_authors_code(tiny_dir: Path, text: Text, vae_config) -> None:
    """`idle_adapters: decay`: an adapter left out of a step still gets AdamW's weight decay
    (w <- w (1 - lr wd), by hand) and, once it has moments, its momentum (issue 21 §4)."""
    cfg = tiny_train_config(steps=12, weight_decay=0.1, warmup_steps=0, idle_adapters="decay")
    clips = make_clips(text)
    state = T.build_state(cfg, MOCHI, tiny_dir, torch.device("cpu"), torch.float32)
    moved_while_idle_with_momentum = False
    for _ in range(6):
        lr = state.lr_scheduler.get_last_lr()[0]
        before = _snapshot(state.transformer)
        had_moments = {n for n, p in lora.lora_parameters(state.transformer).items()
                       if p in state.optimizer.state and state.optimizer.state[p]["exp_avg"].abs().sum() > 0}
        record = T.train_step(state, clips, text.empty, vae_config, cfg)
        after = _snapshot(state.transformer)
        active = set(lora.select_lora_group(record["group"]))
        for name in before:
            if lora.adapter_of(name) in active:
                continue
            if name in had_moments:
                moved_while_idle_with_momentum |= not torch.allclose(after[name], before[name] * (1 - lr * 0.1))
            else:  # zero gradient, zero moments: weight decay alone
                assert torch.allclose(after[name], before[name] * (1 - lr * 0.1), atol=1e-9), name
    assert moved_while_idle_with_momentum
    assert TrainConfig().key_dump() == TrainConfig(idle_adapters="frozen").key_dump()  # old keys unchanged


def test_group_choice_and_dropout_are_seeded_per_step(tiny_dir: Path, text: Text, vae_config) -> None:
    cfg = tiny_train_config(steps=4, caption_dropout=0.5)
    records = []
    for _ in range(2):
        state = T.build_state(cfg, MOCHI, tiny_dir, torch.device("cpu"), torch.float32)
        records.append([T.train_step(state, make_clips(text), text.empty, vae_config, cfg) for _ in range(4)])
    assert records[0] == records[1]


def test_hmt_off_trains_all_adapters_with_the_plain_loss(tiny_dir: Path, text: Text, vae_config) -> None:
    cfg = tiny_train_config(hmt=False, rcl=False, caption_dropout=0.0)
    clips = make_clips(text, n=1)
    state = T.build_state(cfg, MOCHI, tiny_dir, torch.device("cpu"), torch.float32)
    before = _snapshot(state.transformer)
    record = T.train_step(state, clips, text.empty, vae_config, cfg)
    after = _snapshot(state.transformer)
    assert record["group"] == "all" and record["loss_rcl"] is None
    still = [n for n in before if ".lora_B." in n and torch.equal(before[n], after[n])]
    # the last block's text-stream output is discarded, so its text queries get no gradient
    last = state.transformer.config.num_layers - 1
    assert still == [f"transformer_blocks.{last}.attn1.add_q_proj.lora_B.relation.weight"]

    # the logged loss is the unweighted one: recompute it from the step's draws with the old weights
    fresh = T.build_state(cfg, MOCHI, tiny_dir, torch.device("cpu"), torch.float32)
    g = T.step_generator(cfg.seed, 1)
    torch.randint(1, (1,), generator=g), torch.randint(1, (1,), generator=g), torch.rand((), generator=g)
    s = torch.rand((1,), generator=g)
    eps = torch.randn((1, *clips[0].latent_mean.shape), generator=g)
    z0 = normalize_latents(clips[0].latent_mean, vae_config)[None]
    with torch.no_grad():
        v = fresh.transformer(T.add_noise(z0, eps, s), text.embeds[None], mochi.timestep_from_noise_level(s),
                              text.mask[None], return_dict=False)[0]
    assert abs(record["loss_rec"] - (v - mochi.flow_target(z0, eps)).square().mean().item()) < 1e-5


def _subject_step(tiny_dir: Path, text: Text, vae_config, **update):
    """One forced `subject1` step with filled banks; its record, LoRA gradients and bank sizes."""
    cfg = tiny_train_config(**update)
    state = T.build_state(cfg, MOCHI, tiny_dir, torch.device("cpu"), torch.float32)
    state.groups = ["subject1"]
    g = torch.Generator().manual_seed(3)
    state.pos_bank.push(torch.randn(2, 2, 12, generator=g))  # (f - 1, C) dynamics entries, f = 3
    state.neg_bank.push(torch.randn(5, 12, generator=g))
    grads: dict[str, torch.Tensor] = {}
    for name, param in lora.lora_parameters(state.transformer).items():
        param.register_hook(lambda grad, name=name: grads.__setitem__(name, grad.clone()))
    record = T.train_step(state, make_clips(text), text.empty, vae_config, cfg)
    return record, grads, (len(state.pos_bank), len(state.neg_bank))


def test_rcl_branches_choose_whether_subject_steps_get_the_contrastive_loss(tiny_dir: Path, text: Text,
                                                                            vae_config) -> None:
    """METHOD.md §4: 'all' (the authors' code) puts the RCL gradient into the subject LoRA + FFN on
    subject steps and feeds the banks; 'relation' makes a subject step exactly the step without RCL."""
    assert tiny_train_config().rcl_branches == "all"
    plain, plain_grads, plain_banks = _subject_step(tiny_dir, text, vae_config, rcl=False)
    rel, rel_grads, rel_banks = _subject_step(tiny_dir, text, vae_config, rcl_branches="relation")
    every, every_grads, every_banks = _subject_step(tiny_dir, text, vae_config, rcl_branches="all")

    assert plain["group"] == rel["group"] == every["group"] == "subject1"
    assert rel["loss_rcl"] is None and plain_banks == rel_banks == (2, 5)  # banks untouched
    assert rel_grads.keys() == plain_grads.keys() and all(torch.equal(rel_grads[k], plain_grads[k]) for k in rel_grads)
    assert every["loss_rcl"] is not None and every_banks == (3, 8)  # + one dynamics entry, + f frames
    assert {lora.adapter_of(k) for k in every_grads} == {"subject1", "ffn"}
    moved = {lora.adapter_of(k) for k in every_grads if not torch.equal(every_grads[k], plain_grads[k])}
    assert moved == {"subject1", "ffn"}

    # relation steps keep the contrastive loss under 'relation'
    cfg = tiny_train_config(steps=8, rcl_branches="relation")
    state = T.build_state(cfg, MOCHI, tiny_dir, torch.device("cpu"), torch.float32)
    records = [T.train_step(state, make_clips(text), text.empty, vae_config, cfg) for _ in range(cfg.steps)]
    relation_steps = [r for r in records if r["group"] == "relation"]
    assert all(r["loss_rcl"] is None for r in records if r["group"] != "relation")
    assert len(relation_steps) >= 2 and all(r["loss_rcl"] is not None for r in relation_steps[1:])
    assert len(state.pos_bank) == len(relation_steps)  # only relation steps feed the banks


def test_ablations_and_direct_baseline_run(tiny_dir: Path, text: Text, vae_config, tmp_path: Path) -> None:
    clips = make_clips(text)
    variants = {
        "direct": dict(lora=LoraTripletConfig(rank=2, alpha=2, mode="direct")),
        "no_relation": dict(lora=LoraTripletConfig(rank=2, alpha=2, use_relation=False)),
        "no_subject": dict(lora=LoraTripletConfig(rank=2, alpha=2, use_subject=False)),
        "kv": dict(lora=LoraTripletConfig(rank=2, alpha=2, relation_positions="KV"), rcl=False),
    }
    for name, update in variants.items():
        cfg = tiny_train_config(steps=3, checkpoint_every=3, **update)
        result = T.train(clips, text.empty, vae_config, cfg, tmp_path / name, cpu_base(tiny_dir))
        assert result.final_step == 3 and result.lora_path.is_file(), name
        records = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        if name == "direct":
            assert {r["group"] for r in records} == {"direct"} and all(r["loss_rcl"] is None for r in records)
            assert any(".to_v." in k for k in load_file(result.lora_path))
        if name == "no_subject":
            assert {r["group"] for r in records} == {"relation"}
            assert not any(".to_v." in k for k in load_file(result.lora_path))


# --------------------------------------------------------------------------- the loop, checkpoints, resume


def test_train_writes_checkpoints_logs_and_the_inference_lora(tiny_dir: Path, text: Text, vae_config, tmp_path,
                                                              caplog) -> None:
    cfg = tiny_train_config(steps=7, checkpoint_every=2, keep_last=2, log_every=3)
    with caplog.at_level(logging.INFO, logger="dreamrelation.train"):
        result = T.train(make_clips(text), text.empty, vae_config, cfg, tmp_path, cpu_base(tiny_dir))
    assert result.final_step == 7 and result.resumed_from == 0
    assert [p.name for p in T.checkpoint_dirs(tmp_path)] == ["step-00000006", "step-00000007"]  # keep last 2
    assert result.checkpoint == tmp_path / "checkpoints" / "step-00000007"
    assert result.lora_path == tmp_path / T.LORA_FILE and result.lora_path.is_file()
    assert not any(".to_v." in k or ".add_v_proj." in k for k in load_file(result.lora_path))
    lines = [r for r in caplog.records if r.name == "dreamrelation.train" and r.getMessage().startswith("step ")]
    # every log_every=3 steps, and the first and last step; metrics.jsonl keeps every step
    assert [r.getMessage().split()[1] for r in lines] == ["1/7", "3/7", "6/7", "7/7"]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 7
    assert all(k in lines[-1].getMessage() for k in ("loss_rec=", "loss_rcl=", "group=", "lr="))
    assert result.loss_rcl is not None  # the positive bank is filled after step 1
    state = torch.load(result.checkpoint / "state.pt", weights_only=True)
    assert state["step"] == 7
    assert state["pos_bank"]["items"].shape == (7, 2, 12)  # one (f - 1, C) entry per step
    assert state["neg_bank"]["items"].shape == (21, 12)  # f = 3 frame features per step


def test_resume_is_exact(tiny_dir: Path, text: Text, vae_config, tmp_path: Path) -> None:
    cfg = tiny_train_config(steps=8, checkpoint_every=4, caption_dropout=0.3)
    clips = make_clips(text, n=3)
    whole = T.train(clips, text.empty, vae_config, cfg, tmp_path / "whole", cpu_base(tiny_dir))
    half = T.train(clips, text.empty, vae_config, cfg, tmp_path / "split", cpu_base(tiny_dir), stop_at=4)
    assert half.final_step == 4 and half.lora_path is None
    # an interrupted run may have logged steps past its last checkpoint: they are redone
    # ... and the last line may be torn (disk full, or killed mid-write): ignored, then rewritten
    with (tmp_path / "split" / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": 5, "loss_rec": 0.0}) + "\n" + '{"step": 6, "loss_r')
    rest = T.train(clips, text.empty, vae_config, cfg, tmp_path / "split", cpu_base(tiny_dir))
    assert rest.resumed_from == 4 and rest.final_step == 8
    again = T.train(clips, text.empty, vae_config, cfg, tmp_path / "split", cpu_base(tiny_dir))  # nothing left
    assert again.resumed_from == 8 and again.loss_rec == rest.loss_rec and again.lora_path.is_file()

    a, b = load_file(whole.checkpoint / "adapters.safetensors"), load_file(rest.checkpoint / "adapters.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    la, lb = load_file(whole.lora_path), load_file(rest.lora_path)
    assert all(torch.equal(la[k], lb[k]) for k in la)
    log_a = (tmp_path / "whole" / "metrics.jsonl").read_text()
    assert log_a == (tmp_path / "split" / "metrics.jsonl").read_text()
    sa = torch.load(whole.checkpoint / "state.pt", weights_only=True)
    sb = torch.load(rest.checkpoint / "state.pt", weights_only=True)
    assert torch.equal(sa["neg_bank"]["items"], sb["neg_bank"]["items"])


def test_a_resumed_run_logs_its_first_and_last_step_and_log_every_is_no_config_change(
        tiny_dir: Path, text: Text, vae_config, tmp_path: Path, caplog) -> None:
    clips = make_clips(text, n=1)
    steps: list[str] = []
    with caplog.at_level(logging.INFO, logger="dreamrelation.train"):
        T.train(clips, text.empty, vae_config, tiny_train_config(steps=7, checkpoint_every=4, log_every=10),
                tmp_path, cpu_base(tiny_dir), stop_at=4)
        steps.append(" ".join(r.getMessage().split()[1] for r in caplog.records if r.getMessage().startswith("step ")))
        caplog.clear()
        T.train(clips, text.empty, vae_config, tiny_train_config(steps=7, checkpoint_every=4, log_every=2),
                tmp_path, cpu_base(tiny_dir))
        steps.append(" ".join(r.getMessage().split()[1] for r in caplog.records if r.getMessage().startswith("step ")))
    assert steps == ["1/7 4/7", "5/7 6/7 7/7"]  # first and last of each run, every 2nd in between
    assert "different TrainConfig" not in caplog.text  # a logging setting is not a change of training


def test_the_step_log_line_uses_the_one_rounding_rule() -> None:
    record = {"step": 50, "group": "relation", "loss_rec": 0.123456789, "loss_rcl": None, "lr": 0.000199999}
    assert T.step_line(record, 2400) == "step 50/2400 group=relation loss_rec=0.1235 loss_rcl=- lr=0.0002"
    assert "loss_rcl=2.346 " in T.step_line({**record, "loss_rcl": 2.3456}, 2400)
    assert T.should_log(1, 1, 2400, 50) and T.should_log(100, 1, 2400, 50) and T.should_log(2400, 1, 2400, 50)
    assert not T.should_log(99, 1, 2400, 50)
    assert sum(T.should_log(step, 1, 2400, 50) for step in range(1, 2401)) == 49  # not 2,400 lines


def test_log_every_never_changes_the_training_artifact_key() -> None:
    from dreamrelation.config import PipelineConfig
    from dreamrelation.plan import plan_relation

    base = PipelineConfig()
    assert TrainConfig().log_every == 50 and base.train.log_every == 5  # the paper profile, the demo
    for every in (1, 50, 1000):
        train_cfg = base.train.model_copy(update={"log_every": every})
        assert "log_every" not in str(train_cfg) and "log_every" not in train_cfg.key_dump()
        changed = base.model_copy(update={"train": train_cfg})
        assert plan_relation("A058", changed)["train_relation"] == plan_relation("A058", base)["train_relation"]
    with pytest.raises(ValueError, match="log_every"):
        TrainConfig(log_every=0)


def test_metrics_log_with_a_torn_last_line_or_a_bad_middle_line(tmp_path: Path, caplog) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    with caplog.at_level("WARNING", logger="dreamrelation"):
        assert T.read_metrics(path) == [{"step": 1}, {"step": 2}]
    assert "ignoring a torn last line (3)" in caplog.text and str(path) in caplog.text
    path.write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n')
    with pytest.raises(ValueError, match=rf"{path} line 2 is not a JSON record"):
        T.read_metrics(path)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_dir: Path, text: Text, vae_config,
                                                                   tmp_path: Path) -> None:
    cfg = tiny_train_config(steps=6, checkpoint_every=2)
    clips = make_clips(text, n=1)
    T.train(clips, text.empty, vae_config, cfg, tmp_path, cpu_base(tiny_dir), stop_at=2)
    good = T.checkpoint_dirs(tmp_path)[-1]
    weights = (good / "adapters.safetensors").read_bytes()
    clips[0].latent_mean[0, 0, 0, 0] = float("nan")
    with pytest.raises(T.NonFiniteLossError, match="non-finite loss at step 3") as err:
        T.train(clips, text.empty, vae_config, cfg, tmp_path, cpu_base(tiny_dir))
    assert str(good) in str(err.value)
    assert T.checkpoint_dirs(tmp_path) == [good] and (good / "adapters.safetensors").read_bytes() == weights
    assert not (tmp_path / T.LORA_FILE).exists()


def test_inputs_are_checked(tiny_dir: Path, text: Text, vae_config, tmp_path: Path) -> None:
    clips = make_clips(text, n=1)
    clips[0].latent_masks = clips[0].latent_masks[:, :, :2]
    with pytest.raises(ValueError, match="latent_masks"):
        T.train(clips, text.empty, vae_config, tiny_train_config(), tmp_path, cpu_base(tiny_dir))
    mixed = make_clips(text, n=1) + make_clips(text, n=1, shape=(2, 4, 4))
    with pytest.raises(ValueError, match="same number of latent frames"):
        T.train(mixed, text.empty, vae_config, tiny_train_config(), tmp_path, cpu_base(tiny_dir))


# --------------------------------------------------------------------------- the convention test


_FAMILY_DIRECTION = torch.randn(12, 1, 1, 1, generator=torch.Generator().manual_seed(42))


@pytest.fixture(scope="module")
def pretrained_base(tiny_dir: Path, text: Text, tmp_path_factory) -> Path:
    """The tiny base trained briefly as a denoiser, with the convention spelled out independently
    of the training module: x = (1 - s) z0 + s eps, t = 1000 (1 - s), target z0 - eps."""
    folder = tmp_path_factory.mktemp("pretrained") / "mochi"
    shutil.copytree(tiny_dir, folder)
    model = MOCHI.load_transformer(folder)

    def mochi_loss(model: torch.nn.Module, z0: torch.Tensor, eps: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        x = (1 - s.view(-1, 1, 1, 1, 1)) * z0 + s.view(-1, 1, 1, 1, 1) * eps
        v = model(x, text.embeds.expand(len(s), -1, -1), 1000 * (1 - s), text.mask.expand(len(s), -1),
                  return_dict=False)[0]
        return (v - (z0 - eps)).square().mean()

    train_denoiser(model, _FAMILY_DIRECTION, 500, mochi_loss)
    model.save_pretrained(folder / "transformer")
    return folder


def test_convention_overfit_one_clip_then_sample_through_the_pipeline(pretrained_base: Path, text: Text,
                                                                      vae_config, tmp_path: Path) -> None:
    """METHOD.md §1 (a): a LoRA overfit on one clip, sampled by MochiPipeline with guidance 1,
    lands much closer to the clip than the base model does."""
    clip_z = (-2.0 * _FAMILY_DIRECTION).expand(12, 3, 4, 4)  # normalized latents of "the clip"
    raw = denormalize_latents(clip_z, vae_config)  # what encode_latents would have stored
    clip = make_clips(text, n=1)[0]
    clip.latent_mean, clip.latent_masks = raw.clone(), torch.zeros(3, 3, 4, 4)
    cfg = TrainConfig(
        steps=200, lr=1e-2, warmup_steps=20, caption_dropout=0.0, hmt=False, rcl=False, checkpoint_every=200,
        sample_every=0, gradient_checkpointing=False, lora=LoraTripletConfig(rank=16, alpha=16),
    )
    result = T.train([clip], text.empty, vae_config, cfg, tmp_path, cpu_base(pretrained_base))

    def sample(lora_path: Path | None) -> torch.Tensor:
        pipe = load_inference_pipeline(MOCHI, pretrained_base, lora_path)
        return pipe(
            prompt_embeds=text.embeds.expand(4, -1, -1),  # 4 noise draws
            prompt_attention_mask=text.mask.expand(4, -1),
            height=32, width=32, num_frames=13, num_inference_steps=16, guidance_scale=1.0,
            generator=torch.Generator().manual_seed(7), output_type="latent",
        ).frames

    mse_base = (sample(None) - clip_z).square().mean().item()
    mse_lora = (sample(result.lora_path) - clip_z).square().mean().item()
    assert mse_lora < 0.35 * mse_base, (mse_lora, mse_base)
