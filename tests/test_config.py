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
    with pytest.raises(ConfigError, match="config 'nope' not found: give a YAML file or a preset \\(demo, mochi-1\\)"):
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
