"""A stream URL from a stranger (the web app's URL field, the cluster API) as a `FrameSource` that reaches only
what the operator's `UrlPolicy` allows (see url_guard.py and guarded_http.py)."""

from __future__ import annotations

import ssl

from ..processing.demuxers import demuxer_whitelist
from .guarded_http import GuardedOpener
from .sources import LiveSource
from .url_guard import FETCHED_SCHEMES, UrlPolicy, check_url


def open_untrusted_url(
    url: str,
    policy: UrlPolicy,
    fps: float | None = 1.0,
    timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
) -> LiveSource:
    """A live source for `url`, checked before anything connects (`url_guard.UrlRefused`, a `ValueError`, says
    why not). http(s) is fetched by this package, FFmpeg's every input checked; RTSP/RTMP (where the policy
    allows their host) go to the checked address, RTSP over its one TCP connection so no port is bound here."""
    checked = check_url(url, policy)
    # no demuxer that opens sockets of its own (SDP/RTP) or runs code, whatever the server sends
    options = {"format_whitelist": demuxer_whitelist(playlists=True)}
    if checked.scheme in FETCHED_SCHEMES:
        options["http_persistent"] = "0"  # FFmpeg's HLS keep-alive path asserts on inputs from a custom io_open
        opener = GuardedOpener(policy, first=checked, timeout=timeout, ssl_context=ssl_context)
        return LiveSource(url, fps=fps, options=options, timeout=timeout, io_open=opener)
    if checked.scheme.startswith("rtsp"):  # RTSP is a demuxer of its own, over its one TCP connection
        options.update(format_whitelist="rtsp", rtsp_transport="tcp")
    return LiveSource(checked.pinned_url, fps=fps, options=options, timeout=timeout, name=url)
