import numpy as np
import pytest

from dreamrelation.data.video import (
    VideoConfig,
    VideoError,
    crop_box,
    latent_frames,
    load_clip,
    preprocess_frames,
    probe_video,
    read_video,
    resample_indices,
    warn_if_crop_discards_most,
    write_video,
)


def test_latent_frames():
    assert [latent_frames(n) for n in (1, 7, 25, 61)] == [1, 2, 5, 11]
    with pytest.raises(ValueError, match="60 frames is not of the form 6k\\+1"):
        latent_frames(60)


def test_crop_box_to_848_480():
    # 1920x1080 is wider than 16:9? No: 1.778 > 1.767, so the width is cropped.
    top, left, h, w = crop_box(1080, 1920, 848 / 480)
    assert (top, h) == (0, 1080) and w == 1908 and left == 6
    top, left, h, w = crop_box(1000, 1000, 2.0)
    assert (top, left, h, w) == (250, 0, 500, 1000)


def test_resample_indices():
    assert resample_indices(10, 30, 30).tolist() == list(range(10))
    assert resample_indices(8, 60, 30).tolist() == [0, 2, 4, 6]
    assert resample_indices(5, 15, 30).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_preprocess_keeps_first_n_and_crops_the_centre():
    frames = np.zeros((30, 40, 80, 3), np.uint8)
    frames[:, :, 30:50] = 255  # a bright vertical band in the centre
    for t in range(30):
        frames[t, 0, 0, 0] = t  # frame index in a corner pixel
    out = preprocess_frames(frames, 30.0, 25, 16, 32, aspect=2.0, nearest=True)
    assert out.shape == (25, 16, 32, 3)
    assert out[:, 0, 0, 0].tolist() == list(range(25))
    assert out[0, 8, 16].tolist() == [255, 255, 255] and out[0, 8, 2].tolist() == [0, 0, 0]
    masks = np.zeros((30, 40, 80), np.uint8)
    assert preprocess_frames(masks, 30.0, 25, 16, 32, aspect=2.0, nearest=True).shape == (25, 16, 32)


def test_too_short_clip_is_named():
    with pytest.raises(VideoError, match="S001C001P001R001A058 is too short: 20 frames at 30 fps, 25 needed"):
        preprocess_frames(np.zeros((20, 8, 8, 3), np.uint8), 30.0, 25, 16, 16, name="S001C001P001R001A058")


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_write_read_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 255, (7, 1, 1, 3), dtype=np.uint8), 32 * 48, axis=1).reshape(7, 32, 48, 3)
    path = tmp_path / f"clip{suffix}"
    write_video(path, frames, 30.0)
    info = probe_video(path)
    assert (info.frames, info.width, info.height) == (7, 48, 32)
    assert info.fps == pytest.approx(30.0)
    decoded, fps = read_video(path)
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(int) - frames).mean() < 6
    assert not list(tmp_path.glob(".*partial*"))
    assert load_clip(path, 7, 16, 16, aspect=1.0).shape == (7, 16, 16, 3)


def test_corrupt_video_error_names_the_file(tmp_path):
    bad = tmp_path / "S001C001P001R001A058_rgb.avi"
    bad.write_bytes(b"RIFF\x00\x00garbage" * 10)
    with pytest.raises(VideoError, match="cannot read video .*S001C001P001R001A058_rgb.avi"):
        read_video(bad)
    with pytest.raises(VideoError, match="S001C001P001R001A058_rgb.avi"):
        probe_video(bad)


def test_video_config_validation():
    with pytest.raises(ValueError, match="not a positive multiple of 16"):
        VideoConfig(height=100)
    with pytest.raises(ValueError, match="6k\\+1"):
        VideoConfig(num_frames=48)


def test_a_crop_that_discards_most_of_the_frame_is_warned_about(tmp_path, caplog):
    portrait = tmp_path / "portrait.mp4"
    write_video(portrait, np.zeros((7, 96, 48, 3), np.uint8), 30.0)
    landscape = tmp_path / "landscape.mp4"
    write_video(landscape, np.zeros((7, 48, 96, 3), np.uint8), 30.0)
    with caplog.at_level("WARNING", logger="dreamrelation.video"):
        load_clip(landscape, 7, 32, 48, aspect=848 / 480)
        assert caplog.text == ""
        load_clip(portrait, 7, 32, 48, aspect=848 / 480)
    # 48x96 cropped to 848:480 keeps 48x27 of 48x96 pixels: 28 %
    assert f"{portrait}: the centre crop to 1.77:1 keeps only 28% of its 48x96 frame" in caplog.text
    assert warn_if_crop_discards_most("square", 100, 100, 848 / 480) == pytest.approx(57 * 100 / 100**2)

