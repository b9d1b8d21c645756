"""Frame sources: real encoded files (decord and PyAV), live inputs over a local HTTP server, iterators;
sampling by timestamp, pacing, and clear errors for bad inputs."""

import socket
import threading
import time

import av
import numpy as np
import pytest
from PIL import Image

from flash_vstream_hf.streaming import FileSource, IteratorSource, LiveSource, open_source
from flash_vstream_hf.tiny import synthetic_frame, write_synthetic_video

from .helpers import http_server

BACKENDS = ["decord", "pyav"]


def frame_index(image: np.ndarray) -> int:
    """Index of a decoded synthetic frame: its red background level is (16 i) % 256 (lossy, so round)."""
    return round(float(np.median(image[..., 0])) / 16) % 16


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    variable_times = [0.0, 0.1, 0.2, 1.5, 1.6, 3.05, 3.1, 4.0, 4.2, 5.99, 6.0]
    return {
        "constant": write_synthetic_video(folder / "constant.mp4", num_frames=45, fps=10),
        "variable": write_synthetic_video(folder / "variable.mp4", timestamps=variable_times),
        "folder": folder,
    }


@pytest.mark.parametrize("kind, fps, times, indices", [
    ("constant", 1.0, [0, 1, 2, 3, 4], [0, 10, 20, 30, 40]),
    ("constant", 2.5, [0.4 * k for k in range(12)], [4 * k for k in range(12)]),
    # targets 0, 1, 2, ... s: the first frame at or after each, a frame covering two targets taken once
    ("variable", 1.0, [0, 1.5, 3.05, 4.0, 5.99, 6.0], [0, 3, 5, 7, 9, 10]),
])  # fmt: skip
def test_file_frames_are_sampled_by_timestamp_with_either_backend(videos, kind, fps, times, indices):
    decoded = {}
    for backend in BACKENDS:
        frames = list(FileSource(videos[kind], fps=fps, backend=backend).frames())
        assert [f.timestamp for f in frames] == pytest.approx(times, abs=1e-3), backend
        assert [frame_index(f.image) for f in frames] == [i % 16 for i in indices], backend
        decoded[backend] = frames
    # decord and PyAV: the same frames at the same timestamps, pixels equal up to codec rounding
    decord, pyav = decoded["decord"], decoded["pyav"]
    assert [f.timestamp for f in decord] == pytest.approx([f.timestamp for f in pyav], abs=1e-3)
    for a, b in zip(decord, pyav):
        assert np.abs(a.image.astype(int) - b.image.astype(int)).mean() < 2


def test_pacing_plays_at_wall_clock_speed_and_unpaced_reads_at_once(videos):
    # 4 frames at 0, 1, 2, 3 s of stream time played 10x: the last one arrives 0.3 s after the first
    source = FileSource(videos["constant"], fps=1.0, speed=10.0)
    arrivals = []
    for frame in source.frames():
        arrivals.append(time.monotonic())
        if len(arrivals) == 4:
            break
    assert arrivals[3] - arrivals[0] >= 0.29
    assert arrivals[1] - arrivals[0] >= 0.09
    started = time.monotonic()
    assert len(list(FileSource(videos["constant"], fps=1.0).frames())) == 5
    assert time.monotonic() - started < 0.29  # as fast as possible: far quicker than 0.4 s of 10x play


def test_pacing_stops_early_when_asked(videos):
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    frames = list(FileSource(videos["constant"], fps=1.0, speed=1.0).frames(stop))  # would take 4 s
    assert len(frames) == 1 and time.monotonic() - started < 2.0


def test_iterator_sources_take_arrays_pil_images_and_timestamped_pairs():
    arrays = [synthetic_frame(i) for i in range(6)]
    # no timestamps: taken as already sampled at fps
    plain = list(IteratorSource(arrays, fps=2.0).frames())
    assert [f.timestamp for f in plain] == pytest.approx([0, 0.5, 1.0, 1.5, 2.0, 2.5])
    # a known frame rate, sampled down to fps
    rated = list(IteratorSource(arrays, fps=1.0, frame_rate=2.0).frames())
    assert [f.timestamp for f in rated] == pytest.approx([0, 1.0, 2.0])
    assert [frame_index(f.image) for f in rated] == [0, 2, 4]
    # (timestamp, frame) pairs with a variable rate, and PIL images converted to arrays
    pairs = [(t, Image.fromarray(a)) for t, a in zip([0.0, 0.3, 1.2, 1.4, 3.0, 3.5], arrays)]
    sampled = list(IteratorSource(pairs, fps=1.0).frames())
    assert [f.timestamp for f in sampled] == pytest.approx([0.0, 1.2, 3.0])
    assert all(isinstance(f.image, np.ndarray) and f.image.shape == (48, 64, 3) for f in sampled)
    assert [frame_index(f.image) for f in sampled] == [0, 2, 4]


def test_open_source_picks_the_source_kind(videos):
    assert isinstance(open_source(videos["constant"]), FileSource)
    assert isinstance(open_source("rtsp://camera.local/stream"), LiveSource)
    device = open_source("/dev/video0")
    assert isinstance(device, LiveSource) and device.format == "v4l2" and device.live
    assert isinstance(open_source(iter([synthetic_frame(0)])), IteratorSource)
    with pytest.raises(TypeError, match="source must be"):
        open_source(12345)
    with pytest.raises(ValueError, match="fps"):
        open_source(videos["constant"], fps=0)
    with pytest.raises(ValueError, match="speed"):
        open_source(videos["constant"], speed=-1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_files_fail_at_open_with_the_file_named(videos, backend):
    folder = videos["folder"]
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        FileSource(folder / "missing.mp4", backend=backend).open()
    corrupt = folder / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match="corrupt.mp4"):
        FileSource(corrupt, backend=backend).open()
    with pytest.raises(ValueError, match="zero.mp4"):
        FileSource(write_empty_video(folder / "zero.mp4"), backend=backend).open()
    with pytest.raises(ValueError, match="audio.m4a"):  # no video stream
        FileSource(write_audio_only(folder / "audio.m4a"), backend=backend).open()


def test_a_dead_live_source_fails_at_open():
    port = free_port()
    for url in (f"rtsp://127.0.0.1:{port}/live", f"http://127.0.0.1:{port}/live.mkv"):
        with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}"):
            LiveSource(url, timeout=2).open()


def test_a_live_http_stream_is_decoded_with_stream_timestamps(videos):
    with http_server(videos["folder"]) as base:
        write_synthetic_video(videos["folder"] / "live.mkv", num_frames=30, fps=10)
        source = LiveSource(f"{base}/live.mkv", fps=1.0, timeout=5)
        frames = list(source.frames())
        assert source.live
        assert [f.timestamp for f in frames] == pytest.approx([0, 1, 2])
        assert [frame_index(f.image) for f in frames] == [0, 10, 20 % 16]
        with pytest.raises(ConnectionError, match="404"):
            LiveSource(f"{base}/nothing.mkv", timeout=5).open()


# -- helpers ----------------------------------------------------------------------------------------------------


def write_empty_video(path) -> str:
    """A container with a video stream header and zero frames."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    return str(path)


def write_audio_only(path) -> str:
    """One second of silence, no video stream."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for index in range(16):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, index * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return str(path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_timestamps_going_back_start_a_new_segment_sampled_like_one_stream():
    # two 2 s recordings at 10 fps, concatenated: the second carries on one frame interval after the first
    pairs = [(i / 10, synthetic_frame(i)) for i in range(20)] * 2
    source = IteratorSource(pairs, fps=1.0)
    frames = list(source.frames())
    assert [f.timestamp for f in frames] == pytest.approx([0.0, 1.0, 2.0, 3.0])
    assert [frame_index(f.image) for f in frames] == [0, 10 % 16, 0, 10 % 16]
    assert source.timestamp_resets == 1


def test_unusable_timestamps_are_passed_on_as_nan_for_the_consumer_to_count():
    pairs = [(0.0, synthetic_frame(0)), ("abc", synthetic_frame(1)), (float("inf"), synthetic_frame(2)), (1.0, None)]
    frames = list(IteratorSource(pairs, fps=1.0).frames())
    assert [f.timestamp for f in frames][0] == 0.0 and np.isnan([f.timestamp for f in frames][1:3]).all()
    assert frames[3].timestamp == 1.0 and len(frames) == 4


def test_frames_are_downscaled_to_a_bounded_size_close_to_direct_preprocessing(processor):
    from flash_vstream_hf.streaming.sources import MAX_ASPECT_RATIO, downscale_frame

    big = synthetic_frame(3, width=4000, height=3000)
    small = downscale_frame(big, 64)
    assert small.shape == (64, 85, 3) and small.dtype == np.uint8
    direct = processor.image_processor([big], return_tensors="pt")["pixel_values"]
    fitted = processor.image_processor([small], return_tensors="pt")["pixel_values"]
    assert (direct - fitted).abs().mean() < 0.05  # normalised pixel units: a second resampling, little else
    assert downscale_frame(np.zeros((100, 100_000, 3), np.uint8), 64).shape[1] <= MAX_ASPECT_RATIO * 64
    assert downscale_frame(np.zeros((10, 5000, 3), np.uint8), 64).shape == (1, 256, 3)
    frame = synthetic_frame(1)
    kept = downscale_frame(frame, 64)
    assert kept.shape == frame.shape and np.array_equal(kept, frame) and kept is not frame  # a copy, not resized
