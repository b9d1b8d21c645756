"""Fault injection on video files: truncated files, still images named as videos, frames too small for decord,
raw streams without timestamps and concatenated recordings, with both decoders."""

import json
import logging
import os
import pickle
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from flash_vstream_hf.processing import video_io
from flash_vstream_hf.processing.video_io import TruncatedVideoError, iter_video_frames, read_video_frames
from flash_vstream_hf.tiny import synthetic_frame

BACKENDS = ["decord", "pyav"]


def encode(path, indices=range(40), fps=10, codec="mpeg4", format=None, options=None, size=(64, 48), images=None):
    """Encode `synthetic_frame(i)` for each of `indices` (or the given `images`) at `fps` with PyAV."""
    width, height = size
    images = images if images is not None else [synthetic_frame(i, width, height) for i in indices]
    # lossless RGB for png/rawvideo (AVI's raw RGB is BGR), chroma at full size for ffv1
    pix_fmt = {"png": "rgb24", "rawvideo": "bgr24", "ffv1": "yuv444p"}.get(codec, "yuv420p")
    with av.open(os.fspath(path), "w", format=format, options=options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for pts, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return os.fspath(path)


def noise(count: int, size=(64, 48)) -> list[np.ndarray]:
    """`count` frames of smooth noise (hard to compress), seeded."""
    rng = np.random.default_rng(0)
    return [np.clip(rng.normal(128, 40, (size[1], size[0], 3)), 0, 255).astype(np.uint8) for _ in range(count)]


def cut(path, fraction=0.5) -> str:
    """A copy of `path` holding only its first `fraction` of bytes, as an interrupted download or recording leaves."""
    stem, ext = os.path.splitext(path)
    with open(path, "rb") as handle:
        data = handle.read()
    target = f"{stem}-cut{ext}"
    with open(target, "wb") as handle:
        handle.write(data[: int(len(data) * fraction)])
    return target


def encode_with_audio(path, video_seconds: float, audio_seconds: float, audio_codec: str) -> str:
    """10 fps synthetic video for `video_seconds` with a silent mono track of `audio_seconds`."""
    rate, chunk = 16000, 1024
    sample_format = "fltp" if audio_codec == "aac" else "s16"
    with av.open(os.fspath(path), "w") as container:
        video = container.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream(audio_codec, rate=rate, layout="mono")
        for index in range(round(video_seconds * 10)):
            frame = av.VideoFrame.from_ndarray(synthetic_frame(index), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 10)
            container.mux(video.encode(frame))
        for start in range(0, round(audio_seconds * rate), chunk):
            samples = np.zeros((1, chunk), np.float32 if sample_format == "fltp" else np.int16)
            frame = av.AudioFrame.from_ndarray(samples, format=sample_format, layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            container.mux(audio.encode(frame))
        container.mux(video.encode())
        container.mux(audio.encode())
    return os.fspath(path)


def frame_index(frame) -> int:
    """Index (mod 16) of a decoded synthetic frame: its red background is (16 i) % 256 (lossy, so round)."""
    return round(float(np.median(frame.image[..., 0])) / 16) % 16


def decode_until_error(path, backend, **kwargs) -> tuple[list, Exception | None]:
    """The frames `iter_video_frames` delivered, and the exception that ended it (None for a clean end)."""
    frames = []
    try:
        for frame in iter_video_frames(path, backend=backend, **kwargs):
            frames.append(frame)
    except Exception as error:  # noqa: BLE001 - the test inspects it
        return frames, error
    return frames, None


def complete_packets(path: str, size: int) -> int:
    """Video packets of the intact file `path` whose bytes all lie within its first `size` bytes."""
    with av.open(path) as container:
        packets = container.demux(container.streams.video[0])
        return sum(1 for p in packets if p.size and p.pos is not None and p.pos + p.size <= size)


@pytest.fixture
def warnings_logged():
    """The records video_io logs (the package's loggers do not propagate to the root logger caplog watches)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger(video_io.__name__)
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


# -- 1. truncated files: every decodable frame, then TruncatedVideoError ------------------------------------------

TRUNCATED = {
    # name: (encode kwargs, file name); all 40 frames at 10 fps, so 4.0 s declared
    "mp4 faststart": (dict(options={"movflags": "faststart"}), "fast.mp4"),
    # noisy frames, so that the frame data outweighs the index that comes first
    "h264 mp4 faststart (B-frames)": (
        dict(codec="libx264", images=noise(40), options={"movflags": "faststart"}),
        "h.mp4",
    ),
    "matroska": (dict(codec="libx264", size=(128, 96)), "rec.mkv"),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", list(TRUNCATED))
def test_a_truncated_file_delivers_every_decodable_frame_then_raises(tmp_path, kind, backend):
    kwargs, name = TRUNCATED[kind]
    intact = encode(tmp_path / name, **kwargs)
    truncated = cut(intact)
    frames, error = decode_until_error(truncated, backend, fps=None)
    assert isinstance(error, TruncatedVideoError), error
    # nothing decodable is thrown away: one frame per packet that the cut left whole (B-frames the decoder held
    # when it met the cut packet included), in time order, before the error
    assert len(frames) == complete_packets(intact, os.path.getsize(truncated)) >= 5
    times = [f.timestamp for f in frames]
    assert times == sorted(times) and times[0] == 0.0
    assert (error.path, error.stopped_at) == (truncated, pytest.approx(times[-1]))
    assert error.expected_duration == pytest.approx(4.0, abs=0.01)
    assert f"at {times[-1]:.1f} s of 4.0 s" in str(error) and "-cut." in str(error)


INTACT = {
    "mp4": dict(),
    "mp4 faststart": dict(options={"movflags": "faststart"}),
    "h264 mp4": dict(codec="libx264"),
    "matroska": dict(codec="libx264"),
    "mpeg-ts": dict(format="mpegts"),
    "h264 mpeg-ts": dict(codec="libx264", format="mpegts"),
    "avi": dict(codec="png"),
    "webm": dict(codec="libvpx"),
}
INTACT_NAMES = {"matroska": "v.mkv", "mpeg-ts": "v.ts", "h264 mpeg-ts": "v.ts", "avi": "v.avi", "webm": "v.webm"}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", list(INTACT))
def test_intact_files_of_every_kind_read_in_full_without_error(tmp_path, kind, backend):
    """The control: the truncation checks raise nothing on whole files."""
    path = encode(tmp_path / INTACT_NAMES.get(kind, "v.mp4"), **INTACT[kind])
    frames = read_video_frames(path, fps=None, backend=backend)
    assert [frame_index(f) for f in frames] == [i % 16 for i in range(40)]
    assert [f.timestamp for f in frames] == pytest.approx([k / 10 for k in range(40)], abs=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, audio_codec", [("v.mp4", "aac"), ("v.mkv", "pcm_s16le")])
def test_an_audio_track_outlasting_the_video_is_no_truncation(tmp_path, backend, name, audio_codec):
    path = encode_with_audio(tmp_path / name, video_seconds=2.0, audio_seconds=5.0, audio_codec=audio_codec)
    with av.open(path) as container:
        assert container.duration / 1e6 >= 4.5  # the container's duration is the audio's
    assert len(read_video_frames(path, fps=None, backend=backend)) == 20


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, packet, options", [("rec.ts", 188, {}), ("rec.m2ts", 192, {"mpegts_m2ts_mode": "1"})])
def test_a_transport_stream_cut_mid_packet_delivers_its_frames_then_raises(tmp_path, backend, name, packet, options):
    intact = encode(tmp_path / name, format="mpegts", options=options)
    assert os.path.getsize(intact) % packet == 0
    middle = (os.path.getsize(intact) // 2 // packet) * packet + packet // 2  # inside a packet
    truncated = cut(intact, middle / os.path.getsize(intact))
    frames, error = decode_until_error(truncated, backend, fps=None)
    with av.open(truncated) as container:  # what FFmpeg decodes of it
        decodable = sum(1 for _ in container.decode(video=0))
    assert len(frames) == decodable >= 15
    assert [frame_index(f) for f in frames] == [i % 16 for i in range(decodable)]
    assert isinstance(error, TruncatedVideoError)
    # a TS declares no duration (FFmpeg estimates it from the timestamps that survived the cut)
    assert error.stopped_at == pytest.approx(frames[-1].timestamp) and error.expected_duration is None
    assert "cut short" in str(error)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_transport_stream_cut_on_a_packet_boundary_reads_as_a_shorter_recording(tmp_path, backend):
    """Documented limit: such a file is a valid TS that stops earlier; nothing tells it from a stopped recording."""
    intact = encode(tmp_path / "rec.ts", format="mpegts")
    packets = os.path.getsize(intact) // 188
    truncated = cut(intact, (packets // 2) * 188 / os.path.getsize(intact))
    assert os.path.getsize(truncated) % 188 == 0
    frames = read_video_frames(truncated, fps=None, backend=backend)
    assert 10 <= len(frames) < 40


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_cut_mp4_that_lost_its_index_cannot_be_opened(tmp_path, backend):
    truncated = cut(encode(tmp_path / "plain.mp4"))  # the moov atom comes last: the cut takes it away
    with pytest.raises(ValueError, match=r"plain-cut.mp4: it is an MP4 without its index \(moov box\)") as raised:
        read_video_frames(truncated, backend=backend)
    assert not isinstance(raised.value, TruncatedVideoError)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sampled_frames_of_a_truncated_file_come_before_the_error(tmp_path, backend):
    truncated = cut(encode(tmp_path / "fast.mp4", options={"movflags": "faststart"}))
    frames, error = decode_until_error(truncated, backend, fps=2)
    assert [f.timestamp for f in frames] == pytest.approx([0.5 * k for k in range(len(frames))])
    assert len(frames) >= 2 and isinstance(error, TruncatedVideoError)
    assert error.stopped_at >= frames[-1].timestamp


def test_read_video_frames_hands_the_frames_over_with_the_error(tmp_path):
    truncated = cut(encode(tmp_path / "fast.mp4", options={"movflags": "faststart"}))
    with pytest.raises(TruncatedVideoError) as raised:
        read_video_frames(truncated, fps=None, backend="pyav")
    assert len(raised.value.frames) >= 5 and raised.value.frames[-1].timestamp == raised.value.stopped_at


def test_truncated_video_error_is_a_value_error_that_pickles():
    error = TruncatedVideoError("a.mp4", 12.0, 24.0, "its frames end at 12.10 s")
    assert isinstance(error, ValueError)
    assert "a.mp4" in str(error) and "at 12.0 s of 24.0 s" in str(error)
    copy = pickle.loads(pickle.dumps(error))  # crosses process boundaries (DataLoader workers)
    assert (copy.path, copy.stopped_at, copy.expected_duration, str(copy)) == ("a.mp4", 12.0, 24.0, str(error))
    assert "at 3.0 s (" in str(TruncatedVideoError("b.ts", 3.0))


# -- 2. still images given as videos ------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("image_format, name", [("PNG", "PNG"), ("JPEG", "JPEG"), ("WEBP", "WebP"), ("BMP", "BMP")])
def test_a_still_image_named_as_a_video_is_refused(tmp_path, backend, image_format, name):
    path = tmp_path / "photo.mp4"
    Image.fromarray(synthetic_frame(0)).save(path, format=image_format)
    with pytest.raises(ValueError, match=rf"photo.mp4 is a {name} image, not a video.*one-frame video"):
        read_video_frames(path, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_animated_gif_is_a_video_and_a_single_frame_gif_is_not(tmp_path, backend):
    images = [Image.fromarray(synthetic_frame(i)) for i in range(6)]
    images[0].save(tmp_path / "anim.gif", save_all=True, append_images=images[1:], duration=100, loop=0)
    images[0].save(tmp_path / "still.gif")
    frames = read_video_frames(tmp_path / "anim.gif", fps=None, backend=backend)
    assert len(frames) == 6 and [f.timestamp for f in frames] == pytest.approx([0.1 * k for k in range(6)])
    with pytest.raises(ValueError, match="still.gif is a GIF image"):
        read_video_frames(tmp_path / "still.gif", backend=backend)


# -- 3. frames too small for decord -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("codec, ext", [("png", "avi"), ("ffv1", "mkv"), ("rawvideo", "avi")])
@pytest.mark.parametrize("width, height", [(4, 4), (2, 8), (16, 6)])
def test_tiny_videos_decode_to_well_formed_frames(tmp_path, backend, codec, ext, width, height, warnings_logged):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(5)]
    path = encode(tmp_path / f"tiny.{ext}", codec=codec, size=(width, height), images=images)
    frames = read_video_frames(path, fps=None, backend=backend)
    assert [f.image.shape for f in frames] == [(height, width, 3)] * 5
    assert all(f.image.dtype == np.uint8 for f in frames)
    if codec != "ffv1":  # RGB stored losslessly: the exact pixels come back
        assert all(np.array_equal(f.image, image) for f, image in zip(frames, images))
    if backend == "decord":  # decord mangles rows this narrow: the file went to PyAV, and the log says why
        assert any("PyAV" in r.getMessage() and "shape" in r.getMessage() for r in warnings_logged)


def test_a_malformed_frame_from_decord_is_refused_by_index(tmp_path, monkeypatch):
    path = encode(tmp_path / "ok.mp4", indices=range(8))
    real = video_io._decord_image

    def mangled(reader, index):
        image = real(reader, index)
        return image.reshape(image.shape[0], -1, 6) if index == 3 else image

    monkeypatch.setattr(video_io, "_decord_image", mangled)
    frames, error = decode_until_error(path, "decord", fps=None)
    assert len(frames) == 3
    assert isinstance(error, ValueError) and "frame 3 of video" in str(error) and "(48, 32, 6)" in str(error)


def test_without_pyav_a_video_decord_mangles_is_refused(tmp_path, monkeypatch):
    path = encode(tmp_path / "tiny.avi", codec="png", size=(4, 4), images=[np.zeros((4, 4, 3), np.uint8)] * 3)
    monkeypatch.setattr(video_io, "available_backends", lambda: ["decord"])
    with pytest.raises(ValueError, match=r"tiny.avi.*frame 0 .*shape \(4, 4, \d+\).*PyAV"):
        read_video_frames(path, backend="decord")


# -- 4. raw streams without timestamps ----------------------------------------------------------------------------

RAW = {"h264": dict(codec="libx264", format="h264"), "m4v": dict(codec="mpeg4", format="m4v")}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", list(RAW))
def test_a_raw_stream_is_timed_at_the_rate_its_bitstream_declares_and_says_so(tmp_path, backend, kind, warnings_logged):
    path = encode(tmp_path / f"raw.{kind}", fps=8, **RAW[kind])
    frames = read_video_frames(path, fps=None, backend=backend)
    assert [f.timestamp for f in frames] == pytest.approx([k / 8 for k in range(40)])  # not FFmpeg's 25 fps
    assert {f.time_source for f in frames} == {"bitstream_fps"}
    assert any("no timestamps" in r.getMessage() and "8 fps" in r.getMessage() for r in warnings_logged)
    sampled = read_video_frames(path, fps=1, backend=backend)
    assert [frame_index(f) for f in sampled] == [0, 8, 16 % 16, 24 % 16, 32 % 16]


@pytest.mark.parametrize("backend", BACKENDS)
def test_assume_fps_gives_a_raw_stream_its_real_rate(tmp_path, backend, warnings_logged):
    path = encode(tmp_path / "raw.h264", fps=8, **RAW["h264"])
    frames = read_video_frames(path, fps=1, backend=backend, assume_fps=4)  # recorded at 4 fps, say
    assert [f.timestamp for f in frames] == pytest.approx(list(range(10)))
    assert [frame_index(f) for f in frames] == [(4 * k) % 16 for k in range(10)]
    assert {f.time_source for f in frames} == {"assume_fps"}
    assert not warnings_logged


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_raw_stream_declaring_no_rate_needs_assume_fps(tmp_path, backend):
    path = tmp_path / "camera.mjpeg"
    with open(path, "wb") as handle:  # an MJPEG elementary stream: JPEG images back to back, no frame rate
        for index in range(6):
            Image.fromarray(synthetic_frame(index)).save(handle, format="JPEG")
    with pytest.raises(ValueError, match=r"camera.mjpeg .*no timestamps.*declares no frame rate.*assume_fps"):
        read_video_frames(path, backend=backend)
    frames = read_video_frames(path, fps=None, backend=backend, assume_fps=2)
    assert [f.timestamp for f in frames] == pytest.approx([0.5 * k for k in range(6)])


@pytest.mark.parametrize("backend", BACKENDS)
def test_assume_fps_leaves_files_with_timestamps_alone(tmp_path, backend):
    path = encode(tmp_path / "clip.mp4", indices=range(20))
    frames = read_video_frames(path, fps=None, backend=backend, assume_fps=3)
    assert [f.timestamp for f in frames] == pytest.approx([k / 10 for k in range(20)], abs=1e-3)
    assert {f.time_source for f in frames} == {"timestamps"}
    with pytest.raises(ValueError, match="assume_fps"):
        read_video_frames(path, backend=backend, assume_fps=0)


# -- 5. concatenated recordings -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("codec", ["mpeg4", "libx264"])
def test_concatenated_transport_streams_keep_their_second_recording(tmp_path, backend, codec):
    first = encode(tmp_path / "a.ts", indices=range(30), codec=codec, format="mpegts")
    second = encode(tmp_path / "b.ts", indices=range(30, 50), codec=codec, format="mpegts")
    both = tmp_path / "ab.ts"
    both.write_bytes(open(first, "rb").read() + open(second, "rb").read())  # cat a.ts b.ts > ab.ts
    frames = read_video_frames(both, fps=None, backend=backend)
    # the second recording's timestamps restart at 0: it continues one frame after the first one's last frame
    assert [f.timestamp for f in frames] == pytest.approx([k / 10 for k in range(50)], abs=1e-3)
    assert [frame_index(f) for f in frames] == [k % 16 for k in range(50)]
    sampled = read_video_frames(both, fps=1, backend=backend)
    assert [f.timestamp for f in sampled] == pytest.approx([0, 1, 2, 3, 4], abs=1e-3)
    assert [frame_index(f) for f in sampled] == [0, 10, 20 % 16, 30 % 16, 40 % 16]


# -- a truncated file through the streaming runtime and the CLI: the loss shows ------------------------------------


def test_a_truncated_file_ends_the_session_visibly_and_ask_exits_1(tmp_path, capsys):
    from flash_vstream_hf.cli import main

    # 40 s at 10 fps, cut in half: about 20 s of frames before the cut
    video = cut(encode(tmp_path / "rec.mkv", indices=range(400), codec="libx264", size=(128, 96)))
    argv = ["ask", video, "--model", "tiny", "--max-new-tokens", "2", "--at", "5", "early", "--at", "35", "late"]
    assert main([*argv, "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    early, late = result["answers"]
    assert early["note"] is None and early["frames"] == 6
    assert result["status"]["state"] == "failed" and 10 < result["status"]["failed_at"] < 30
    assert late["stream_failed"] and "truncated or damaged" in late["note"]
