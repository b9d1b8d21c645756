"""Which FFmpeg demuxers may read a video, so that a file or URL from a stranger cannot make FFmpeg open anything
else.

FFmpeg picks a demuxer by what the bytes look like, not by the file's name, and some demuxers open more inputs
of their own: an HLS or DASH playlist opens the segments it lists (local files included), a concat list the files
it names, an SDP description RTP sockets on the host, IMF the assets of its composition. A video is opened with a
`format_whitelist` without those (the check runs after probing and before the demuxer reads anything) and with an
`io_open` that lets FFmpeg open the video itself and nothing else (`only_this_file`), so a format that would
follow a reference fails instead. HLS and DASH stay allowed for URLs opened through an `io_open` that checks
every address they list (`streaming/guarded_http.py`). Verified behaviour: docs/untrusted_input.md, "Files: a
whitelist of demuxers and an io_open for the file itself".
"""

from __future__ import annotations

import functools

# Demuxers that open sockets of their own (never through io_open) or run code: refused for every input.
NETWORK_DEMUXERS = frozenset({"sdp", "rtp", "rtsp", "lavfi", "avisynth", "vapoursynth"})
# Demuxers that open the files or URLs a playlist lists (through io_open): refused for local files.
PLAYLIST_DEMUXERS = frozenset({"hls", "dash", "concat", "imf", "webm_dash_manifest"})
_SIGNATURES = (  # what the refused kinds start with, for the error message only
    (b"#EXTM3U", "an HLS playlist"),
    (b"ffconcat", "a concat list"),
    (b"v=0", "an SDP description"),
    (b"<?xml", "an XML manifest (DASH or IMF)"),
    (b"<MPD", "a DASH manifest"),
)
AVIO_FLAG_WRITE = 2


class ReferenceRefused(PermissionError):
    """FFmpeg tried to open a second input while reading a video (a playlist entry, a referenced file)."""


@functools.lru_cache(maxsize=2)
def demuxer_whitelist(playlists: bool) -> str:
    """FFmpeg's `format_whitelist` value: every demuxer of the installed PyAV but the network ones (and the
    playlist ones unless `playlists`)."""
    import av

    refused = NETWORK_DEMUXERS | (frozenset() if playlists else PLAYLIST_DEMUXERS)
    names = []
    for name in sorted(av.formats_available):
        try:
            av.format.ContainerFormat(name, "r")
        except ValueError:  # a muxer only
            continue
        if not refused & set(name.split(",")):
            names.append(name)
    return ",".join(names)


def only_this_file(path: str):
    """An `io_open` for `av.open(path, io_open=...)` that opens `path` (for reading) and refuses anything else."""

    def io_open(url: str, flags: int, options: dict):
        if url != path or flags & AVIO_FLAG_WRITE:
            raise ReferenceRefused(f"{path} refers to another input ({url}), which is not opened")
        return open(path, "rb")

    return io_open


def refuse_every_input(url: str, flags: int, options: dict):
    """An `io_open` for a container read from memory (`av.open(io.BytesIO(data), io_open=...)`): it has no second
    input to open."""
    raise ReferenceRefused(f"the video refers to another input ({url}), which is not opened")


def refused_kind(path: str) -> str | None:
    """What a local file that FFmpeg refused to read looks like ("an HLS playlist", ...), for the message."""
    try:
        with open(path, "rb") as file:
            head = file.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError:
        return None
    return next((kind for signature, kind in _SIGNATURES if head.startswith(signature)), None)
