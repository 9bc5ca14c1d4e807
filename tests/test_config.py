import re

import pytest

from dreamrelation.config import ConfigError, PipelineConfig, load_config


def test_default_is_the_demo_profile():
    config = PipelineConfig()
    assert config.model.profile == "demo" and config.synthetic is not None
    assert config.video.num_frames == 25 and config.train.steps < 100
    assert load_config() == config
    assert load_config("demo") == config


def test_overrides_merge_into_sections():
    config = load_config(None, ["select.dataset_root=/data/ntu", "train.steps=7", "select.cameras=[1, 2]"])
    assert config.select.dataset_root == "/data/ntu"
    assert config.select.cameras == [1, 2]
    assert config.select.clips_per_relation == PipelineConfig().select.clips_per_relation  # kept
    assert config.train.steps == 7 and config.train.lora == PipelineConfig().train.lora


def test_mochi_preset_starts_from_the_paper_settings():
    config = load_config("mochi-1")
    assert config.synthetic is None and config.model.profile == "mochi-1"
    assert (config.video.num_frames, config.video.height, config.video.width) == (61, 480, 848)
    assert config.train.steps == 2400 and config.train.lora.rank == 16
    assert config.train.sample.steps == 64 and config.train.sample.guidance == 6.0
    assert config.select.clips_per_relation == 20


def test_bad_configs_are_named(tmp_path):
    with pytest.raises(ConfigError, match="config 'nope' not found: give a YAML file or a preset \\(demo, mochi-1, own-folder, wan-demo, wan2.1-t2v-1.3b, wan2.1-t2v-14b, world-demo\\)"):
        load_config("nope")
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(None, ["train.steps"])
    with pytest.raises(ConfigError, match="invalid config .*num_frames"):
        load_config(None, ["video.num_frames=60"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: huge\n")
    with pytest.raises(ConfigError, match="base must be one of demo, paper"):
        load_config(bad)
    with pytest.raises(ConfigError, match="needs masks.segmenter_dir"):
        load_config(None, ["base=paper", "masks.backend=skeleton-sam2"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("select.clip_per_relation=2", "select: unknown key 'clip_per_relation'; did you mean 'clips_per_relation'?"),
        ("rooot=/tmp/x", "config: unknown key 'rooot'; did you mean 'root'?"),
        ("video.fsp=24", "video: unknown key 'fsp'; did you mean 'fps'?"),
        ("captions.linkmode=copy", "captions: unknown key 'linkmode'; did you mean 'link_mode'?"),
        ("train.lora.rnk=4", "train.lora: unknown key 'rnk'; did you mean 'rank'?"),
        ("select.zzz=1", "select: unknown key 'zzz'; valid keys: cameras, check_all, clips_per_relation"),
    ],
)
def test_unknown_keys_are_named_with_the_closest_valid_one(override, message):
    with pytest.raises(ConfigError) as caught:
        load_config(None, [override])
    assert message in str(caught.value)


def test_unknown_keys_in_a_preset_file_are_errors(tmp_path):
    preset = tmp_path / "mine.yaml"
    preset.write_text("base: paper\nsynthetic: null\ntrian:\n  steps: 5\nselect: {seeed: 3}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(preset)
    assert "unknown key 'trian'; did you mean 'train'?" in str(caught.value)


def test_flow_parameters_reject_unknown_keys_with_a_suggestion():
    from prefect.exceptions import ParameterTypeError

    from dreamrelation.flows.select_clips import select_clips_flow

    with pytest.raises(ParameterTypeError, match="unknown key 'trian'; did you mean 'train'?"):
        select_clips_flow.validate_parameters({"relation": "A058", "config": {"trian": {"steps": 3}}})
    # What a Prefect server checks when a deployment run is created (409 on failure).
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools.validation import ValidationError, validate

    schema = parameter_schema(select_clips_flow).model_dump_for_openapi()
    with pytest.raises(ValidationError, match=r"config.*'trian' was unexpected"):
        validate({"relation": "A058", "config": {"trian": {"steps": 3}}}, schema, raise_on_error=True)
    with pytest.raises(ValidationError, match=r"'clip_per_relation' was unexpected"):
        validate({"config": {"select": {"clip_per_relation": 2}}}, schema, raise_on_error=True)


def test_shipped_presets_and_deployment_parameters_validate():
    import yaml

    from dreamrelation.config import CONFIG_DIR

    for preset in CONFIG_DIR.glob("*.yaml"):
        load_config(preset)
    deployments = yaml.safe_load((CONFIG_DIR.parent / "prefect.yaml").read_text())["deployments"]
    for deployment in deployments:
        config = (deployment.get("parameters") or {}).get("config")
        if isinstance(config, dict):
            PipelineConfig.model_validate(config)


@pytest.mark.parametrize(
    "text, where",
    [("select:\n  setups: [1,\n", "line 3, column 1"), ("root: a\n\tvideo: 1\n", "line 2, column 1")],
)
def test_yaml_syntax_error_in_a_preset_is_one_line_with_its_position(tmp_path, text, where):
    preset = tmp_path / "broken.yaml"
    preset.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(preset)
    message = str(caught.value)
    assert f"config {preset} is not valid YAML: {where}: " in message and "\n" not in message


def test_yaml_syntax_error_in_an_override_names_the_argument():
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["select.setups=[1,"])
    message = str(caught.value)
    assert "-s select.setups=[1,: the value is not valid YAML: line 1, column 4: " in message and "\n" not in message


def test_fields_added_later_leave_existing_artifact_keys_alone():
    """Upgrading must not invalidate artifacts: new fields at their default are not hashed."""
    from dreamrelation.data.captions import CaptionConfig
    from dreamrelation.data.select import SelectConfig
    from dreamrelation.evaluation.config import EvalConfig
    from dreamrelation.plan import plan_relation

    for model, field, other in ((SelectConfig(), "source", "folder"), (CaptionConfig(), "subject_words", ("dog", "cat")),
                                (EvalConfig(), "relation_judge", "toy")):
        assert f"{field}=" not in str(model) and field not in model.key_dump()
        changed = model.model_copy(update={field: other})
        assert f"{field}=" in str(changed) and field in changed.key_dump()
    base = plan_relation("A058", PipelineConfig())
    judged = PipelineConfig().model_copy(update={"evaluate": PipelineConfig().evaluate.model_copy(
        update={"relation_judge": "toy"})})
    plan = plan_relation("A058", judged)
    assert plan["train_relation"] == base["train_relation"] and plan["evaluate"] != base["evaluate"]
    words = PipelineConfig().model_copy(update={"captions": CaptionConfig(subject_words=("dog", "cat"))})
    assert plan_relation("A058", words)["write_captions"] != base["write_captions"]


def test_fields_added_later_are_left_out_at_any_depth():
    """A field added to a nested config (the toy base's DiT) keeps the documented base key."""
    from dreamrelation.config import load_toy_config
    from dreamrelation.plan import plan_toy

    default = load_toy_config(None, [])
    assert "patch_size" not in default.pretrain.key_dump()["dit"]
    # The toy bases docs/study.md reports on: the first default, trained before these fields
    # existed (random T5 heads, 2,500 DiT steps), and today's default.
    earlier = load_toy_config(None, ["pretrain.t5_heads=random", "pretrain.dit.steps=2500"])
    assert "t5_heads" not in earlier.pretrain.key_dump()  # at its value from before the field existed
    assert plan_toy(earlier)["pretrain_base"].key == "base/toy-30f30c57d9079f38"
    assert plan_toy(default)["pretrain_base"].key == "base/toy-7104871a201aba46"
    changed = load_toy_config(None, ["pretrain.dit.noise_levels=logit_normal"])
    assert changed.pretrain.key_dump()["dit"]["noise_levels"] == "logit_normal"
    assert plan_toy(changed)["pretrain_base"].key != "base/toy-7104871a201aba46"


def test_wan_presets_and_the_family_checks() -> None:
    """Clips, samples, text length and profile follow model.family (issue 23); each mismatch is one named error."""
    demo = load_config("wan-demo")
    assert (demo.model.family, demo.model.profile, demo.video.temporal_compression) == ("wan", "demo", 4)
    assert demo.video.latent_frames == 7 and demo.latents.max_text_length == 512  # 25 frames -> 7 on Wan (5 on Mochi)
    assert [m.name for m in demo.evaluate.methods] == ["DreamRelation", "Wan (base)"]
    for name, repo in (("wan2.1-t2v-1.3b", None), ("wan2.1-t2v-14b", "Wan-AI/Wan2.1-T2V-14B-Diffusers")):
        cfg = load_config(name)
        assert (cfg.video.num_frames, cfg.video.height, cfg.video.width, cfg.video.fps) == (81, 480, 832, 16.0)
        assert cfg.video.latent_frames == 21 and cfg.model.profile == "wan2.1" and cfg.model.hub_repo == repo
        assert cfg.train.sample.frames == cfg.evaluate.sample.frames == 81 and cfg.evaluate.sample.guidance == 5.0
    bad = {
        ("model.family=wan",): "model.family=wan compresses time by 4, but video.temporal_compression is 6",
        ("model.family=wan", "video.temporal_compression=4"): "latents.max_text_length=256: the model.family=wan "
        "pipeline encodes prompts to 512 tokens",
        ("model.profile=wan2.1",): "profile 'wan2.1' reads another family's weights than family 'mochi'",
        ("video.num_frames=29",): "29 frames is not of the form 6k+1",
        ("evaluate.sample.frames=27",): "27 frames fits no video VAE",
    }
    for overrides, message in bad.items():
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config("demo", list(overrides))
    with pytest.raises(ConfigError, match=re.escape("train.sample.frames=31: model.family=wan generates 4k+1 frames")):
        load_config("wan-demo", ["train.sample.frames=31"])
