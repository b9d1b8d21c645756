"""Video decoding: timestamp and evenly spaced sampling, decord and PyAV agreeing, variable frame rates, URLs, clear
errors."""

import os
import shutil

import numpy as np
import pytest

from flash_vstream_hf.processing import video_io
from flash_vstream_hf.processing.video_io import (
    TimestampSampler,
    evenly_spaced_indices,
    read_video_frames,
    resolve_backend,
)
from flash_vstream_hf.tiny import write_synthetic_video

from .helpers import http_server

BACKENDS = ["decord", "pyav"]


def red_levels(frames) -> list[int]:
    """The synthetic video encodes frame i with a red background of (16 i) % 256 (lossy: round to a step)."""
    return [round(float(np.median(f.image[..., 0])) / 16) for f in frames]


@pytest.fixture(scope="module")
def constant_rate(tmp_path_factory):
    return write_synthetic_video(tmp_path_factory.mktemp("v") / "cfr.mp4", num_frames=30, fps=10)


@pytest.fixture(scope="module")
def variable_rate(tmp_path_factory):
    times = [0.0, 0.1, 0.2, 1.5, 1.6, 3.05, 3.1, 4.0, 4.2]
    return write_synthetic_video(tmp_path_factory.mktemp("v") / "vfr.mp4", timestamps=times)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_frame_per_second_from_a_constant_rate_file(constant_rate, backend):
    frames = read_video_frames(constant_rate, fps=1, backend=backend)
    assert [f.timestamp for f in frames] == pytest.approx([0.0, 1.0, 2.0])
    assert red_levels(frames) == [0, 10, 20 % 16]


@pytest.mark.parametrize("backend", BACKENDS)
def test_variable_rate_frames_are_sampled_by_timestamp(variable_rate, backend):
    frames = read_video_frames(variable_rate, fps=1, backend=backend)
    # targets 0, 1, 2, 3, 4 s: the first frame at or after each, never the same frame twice
    assert [f.timestamp for f in frames] == pytest.approx([0.0, 1.5, 3.05, 4.0], abs=1e-3)
    assert red_levels(frames) == [0, 3, 5, 7]


def test_decord_and_pyav_give_the_same_frames(constant_rate, variable_rate):
    for path in (constant_rate, variable_rate):
        decord, pyav = (read_video_frames(path, fps=2, backend=b) for b in BACKENDS)
        assert [f.timestamp for f in decord] == pytest.approx([f.timestamp for f in pyav], abs=1e-3)
        for a, b in zip(decord, pyav):
            assert a.image.shape == b.image.shape == (48, 64, 3)
            assert np.abs(a.image.astype(int) - b.image.astype(int)).mean() < 2


def test_all_frames_when_fps_is_none(constant_rate):
    assert len(read_video_frames(constant_rate, fps=None)) == 30


def test_timeline_counts_from_the_first_frame_and_never_runs_backwards():
    timeline = video_io._Timeline(interval=0.1)
    # a second recording restarting at 0 continues one frame interval after the first one's last frame
    times = [timeline.place(raw, None) for raw in [5.0, 5.1, 5.2, 0.0, 0.1, None]]
    assert times == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    assert timeline.segments == 2 and timeline.end == pytest.approx(0.6)
    raw_stream = video_io._Timeline(interval=None, fps=4)  # no timestamps: index / fps, whatever pts say
    assert [raw_stream.place(raw, None) for raw in [None, 9.0, None]] == [0.0, 0.25, 0.5]


def test_frames_read_from_a_file_carry_its_timestamps(constant_rate):
    assert {f.time_source for f in read_video_frames(constant_rate, fps=2)} == {"timestamps"}


def test_sampler_never_repeats_a_frame_of_a_slow_source():
    sampler = TimestampSampler(fps=1.0)
    accepted = [t for t in [0.0, 2.0, 4.0, 4.5, 6.0] if sampler.accept(t)]
    assert accepted == [0.0, 2.0, 4.0, 6.0]
    with pytest.raises(ValueError, match="fps"):
        TimestampSampler(fps=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_and_corrupt_files_raise_clear_errors(tmp_path, backend):
    with pytest.raises(FileNotFoundError, match="nothing.mp4"):
        read_video_frames(tmp_path / "nothing.mp4", backend=backend)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 255, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match="corrupt.mp4"):
        read_video_frames(corrupt, backend=backend)


def test_unknown_or_missing_backend_is_named(monkeypatch):
    with pytest.raises(ValueError, match="opencv"):
        resolve_backend("opencv")
    monkeypatch.setattr(video_io, "available_backends", lambda: ["pyav"])
    assert resolve_backend() == "pyav"
    with pytest.raises(ImportError, match="decord"):
        resolve_backend("decord")
    monkeypatch.setattr(video_io, "available_backends", list)
    with pytest.raises(ImportError, match="decord or PyAV"):
        resolve_backend()


@pytest.mark.parametrize("backend", BACKENDS)
def test_num_frames_picks_evenly_spaced_frames(constant_rate, backend):
    frames = read_video_frames(constant_rate, backend=backend, num_frames=4)
    assert red_levels(frames) == [i % 16 for i in (0, 7, 15, 22)]  # floor(k * 30 / 4)
    assert [f.timestamp for f in frames] == pytest.approx([0.0, 0.7, 1.5, 2.2], abs=1e-3)
    with pytest.raises(ValueError, match="31 frames.*30"):
        read_video_frames(constant_rate, backend=backend, num_frames=31)


def test_evenly_spaced_indices():
    assert evenly_spaced_indices(30, 4) == [0, 7, 15, 22]
    assert evenly_spaced_indices(5, 5) == [0, 1, 2, 3, 4]
    assert evenly_spaced_indices(7, 1) == [0]
    with pytest.raises(ValueError, match="num_frames"):
        evenly_spaced_indices(7, 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_file_urls_are_local_paths(constant_rate, backend, tmp_path):
    url = "file://" + os.path.abspath(constant_rate)
    assert red_levels(read_video_frames(url, backend=backend)) == red_levels(read_video_frames(constant_rate))
    spaced = tmp_path / "a clip.mp4"
    shutil.copyfile(constant_rate, spaced)
    assert len(read_video_frames("file://" + str(spaced).replace(" ", "%20"), backend=backend)) == 3
    with pytest.raises(FileNotFoundError, match="nothing.mp4"):
        read_video_frames(f"file://{tmp_path}/nothing.mp4", backend=backend)


def test_http_urls_are_decoded_with_pyav(constant_rate):
    folder, name = os.path.split(constant_rate)
    with http_server(folder) as base:
        frames = read_video_frames(f"{base}/{name}", fps=2)
        assert [f.timestamp for f in frames] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
        assert red_levels(frames) == red_levels(read_video_frames(constant_rate, fps=2, backend="pyav"))
        assert len(read_video_frames(f"{base}/{name}", num_frames=5)) == 5
        with pytest.raises(ValueError, match="decord cannot open URLs"):
            read_video_frames(f"{base}/{name}", backend="decord")
        with pytest.raises(FileNotFoundError, match="missing.mp4"):
            read_video_frames(f"{base}/missing.mp4")


def test_other_url_schemes_are_refused_clearly():
    with pytest.raises(ValueError, match="rtsp"):
        read_video_frames("rtsp://127.0.0.1/stream")
    with pytest.raises(ValueError, match="file://"):
        read_video_frames("file://otherhost/video.mp4")
