"""Video files from strangers (uploads to the web app, endpoint payloads, files a cluster API is pointed at) that
would make the decoder open something else: HLS playlists listing local files or internal URLs, concat lists,
SDP descriptions. Both decoders refuse them before anything they name is opened; the loopback server they point
at receives nothing."""

from __future__ import annotations

import base64
import pathlib
import socket

import pytest

from flash_vstream_hf.conversion import handler as endpoint
from flash_vstream_hf.processing.video_io import UnsafeVideoError, iter_video_frames
from flash_vstream_hf.serving import ServeApp, UserError, describe

BACKENDS = ["decord", "pyav"]


def hls(entries: list[str]) -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:2"]
    for entry in entries:
        lines += ["#EXTINF:2.0,", entry]
    return "\n".join(lines + ["#EXT-X-ENDLIST", ""])


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def hostile_files(media, server, folder) -> dict[str, tuple[str, str]]:
    """Files written into `folder` that point at `media/clip.ts` or at the loopback `server`: name -> (path,
    what the refusal calls it)."""
    segment = media / "clip.ts"
    port = free_udp_port()
    files = {
        "hls-local-file.m3u8": (hls([str(segment)]), "an HLS playlist"),
        "hls-loopback-url.m3u8": (hls([f"{server.url}/clip.ts"]), "an HLS playlist"),
        "hls-named-as.mp4": (hls([str(segment), f"{server.url}/clip.ts"]), "an HLS playlist"),
        "list.ffconcat": (f"ffconcat version 1.0\nfile '{segment}'\n", "a concat list"),
        "camera.sdp": (
            f"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=video {port} RTP/AVP 96\n",
            "an SDP description",
        ),
    }
    written = {}
    for name, (text, kind) in files.items():
        path = folder / "upload" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        written[name] = (str(path), kind)
    return written


@pytest.mark.parametrize("backend", BACKENDS)
def test_playlists_and_references_are_refused_by_both_decoders(media, server, backend, tmp_path):
    for path, kind in hostile_files(media, server, tmp_path).values():
        with pytest.raises(UnsafeVideoError, match=f"it is {kind}"):
            list(iter_video_frames(path, fps=None, backend=backend))
    assert server.requests == []
    # the segment they pointed at is a good video: read directly, it plays
    assert len(list(iter_video_frames(media / "clip.ts", fps=None, backend=backend))) == 10


def test_an_uploaded_playlist_is_refused_by_the_web_app(tiny, media, server, tmp_path):
    app = ServeApp(describe(*tiny, "tiny"), max_sessions=2)
    try:
        viewer = app.registry.get("tab")
        for name, (path, kind) in hostile_files(media, server, tmp_path).items():
            with pytest.raises(UserError, match=f"cannot play upload {name}: .*it is {kind}"):
                viewer.play_file(path, name=name)
        assert server.requests == []
        assert viewer.status() is None
    finally:
        app.close()


def test_the_endpoint_refuses_a_playlist_as_its_video(media, server, tmp_path):
    for path, _ in hostile_files(media, server, tmp_path).values():
        payload = base64.b64encode(pathlib.Path(path).read_bytes()).decode()
        with pytest.raises(endpoint.PayloadError, match="inputs.video"):
            endpoint.parse_request({"inputs": {"video": payload, "questions": ["What happens?"]}})
    assert server.requests == []


def test_a_file_referring_to_another_input_is_refused_whatever_its_format(tmp_path):
    from flash_vstream_hf.processing.demuxers import ReferenceRefused, only_this_file

    opener = only_this_file(str(tmp_path / "a.mp4"))
    (tmp_path / "a.mp4").write_bytes(b"x")
    assert opener(str(tmp_path / "a.mp4"), 1, {}).read() == b"x"
    with pytest.raises(ReferenceRefused, match="refers to another input"):
        opener(str(tmp_path / "b.ts"), 1, {})
    with pytest.raises(ReferenceRefused):
        opener(str(tmp_path / "a.mp4"), 2, {})  # for writing
