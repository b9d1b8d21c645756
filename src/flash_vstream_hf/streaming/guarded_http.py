"""HTTP(S) for a stranger's URL, fetched by this package instead of FFmpeg, so that every connection goes to an
address the guard checked (`url_guard.py`).

FFmpeg is given the URL with an `io_open` (`GuardedOpener`): every input it opens, the video itself, each HLS or
DASH playlist and segment, comes back here. Each one is checked, resolved once and connected to by address
(`PinnedHttpReader`), with the name kept for the `Host` header and TLS; redirects are checked the same way before
they are followed. So neither a redirect, nor a playlist entry, nor a name that resolves elsewhere the second
time reaches an address the guard refuses. What FFmpeg does with inputs from an `io_open` (verified):
docs/untrusted_input.md, "URLs: the address guard and fetching through io_open".
"""

from __future__ import annotations

import http.client
import io
import socket
import ssl
import urllib.parse

from .url_guard import FETCHED_SCHEMES, CheckedUrl, UrlPolicy, UrlRefused, check_url

MAX_REDIRECTS = 5
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
AVIO_FLAG_WRITE = 2  # FFmpeg's flag for an output


class PinnedHttpReader(io.RawIOBase):
    """A readable (and, where the server takes byte ranges, seekable) file over one checked http(s) URL.

    Every request connects to `checked.address`, never to what the name resolves to later. A seek re-requests
    from the new offset (`Range`); a server that ignores ranges is read from the start again and skipped.
    """

    def __init__(
        self, checked: CheckedUrl, policy: UrlPolicy, timeout: float = 10.0, ssl_context: ssl.SSLContext | None = None
    ):
        super().__init__()
        self.policy, self.timeout = policy, timeout
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.position = 0
        self.size: int | None = None  # bytes, when the server says (then the reader can seek)
        self._response: http.client.HTTPResponse | None = None
        self._connection: http.client.HTTPConnection | None = None
        self.checked = checked
        self._open(0)
        self.size = self._response.length

    # -- io.RawIOBase ---------------------------------------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self.size is not None

    def read(self, size: int = -1) -> bytes:
        if self._response is None:  # past the end
            return b""
        try:
            data = self._response.read(None if size is None or size < 0 else size)
        except http.client.HTTPException as error:  # a cut or garbled response: a failed read, like a socket's
            raise OSError(f"{self.checked.url}: {error!r}") from error
        self.position += len(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if not self.seekable():
            raise OSError("this HTTP stream has no known length and cannot seek")
        target = {io.SEEK_SET: offset, io.SEEK_CUR: self.position + offset, io.SEEK_END: self.size + offset}[whence]
        if target < 0:
            raise OSError(f"cannot seek to {target}")
        if target != self.position:
            self._open(target)
        return self.position

    def close(self) -> None:
        self._disconnect()
        super().close()

    # -- requests -------------------------------------------------------------------------------------------------

    def _open(self, offset: int) -> None:
        """Request the resource from `offset` on, following checked redirects."""
        self._disconnect()
        if self.size is not None and offset >= self.size:  # at or past the end: nothing to request
            self.position = offset
            return
        checked = self.checked
        for _ in range(MAX_REDIRECTS + 1):
            response = self._request(checked, offset)
            if response.status not in REDIRECT_STATUSES:
                break
            location = response.getheader("Location") or ""
            self._disconnect()
            target = urllib.parse.urljoin(checked.url, location)
            try:
                checked = check_url(target, self.policy, schemes=FETCHED_SCHEMES)
            except UrlRefused as error:
                raise UrlRefused(f"{self.checked.url} redirects to a URL that is not opened: {error}") from None
        else:
            raise OSError(f"{self.checked.url} redirects more than {MAX_REDIRECTS} times")
        if response.status == 200 and offset:  # the server ignored the range: skip to the offset
            _skip(response, offset)
        elif response.status not in (200, 206):
            raise OSError(f"{checked.url} answered HTTP {response.status} {response.reason}")
        self.checked, self._response, self.position = checked, response, offset

    def _request(self, checked: CheckedUrl, offset: int) -> http.client.HTTPResponse:
        host = f"[{checked.host}]" if ":" in checked.host else checked.host
        if checked.scheme == "https":
            connection = http.client.HTTPSConnection(host, checked.port, timeout=self.timeout, context=self.ssl_context)
        else:
            connection = http.client.HTTPConnection(host, checked.port, timeout=self.timeout)
        # connect to the checked address; the name stays for the Host header and for TLS (SNI, certificate)
        connection._create_connection = lambda _, timeout, source: socket.create_connection(
            (checked.address, checked.port), timeout, source
        )
        parts = urllib.parse.urlsplit(checked.url)
        target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        self._connection = connection
        try:
            connection.request("GET", target, headers=headers)
            return connection.getresponse()
        except http.client.HTTPException as error:
            raise OSError(f"{checked.url}: {error!r}") from error

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()
        self._connection = self._response = None


class GuardedOpener:
    """FFmpeg's `io_open` for a stranger's http(s) URL: every input FFmpeg asks for (the video, playlists,
    segments) is checked by the guard and fetched by a `PinnedHttpReader`; anything else is refused."""

    def __init__(
        self,
        policy: UrlPolicy,
        first: CheckedUrl | None = None,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ):
        self.policy, self.first, self.timeout, self.ssl_context = policy, first, timeout, ssl_context

    def __call__(self, url: str, flags: int, options: dict) -> PinnedHttpReader:
        if flags & AVIO_FLAG_WRITE:
            raise UrlRefused(f"{url} is refused: nothing is written for a visitor")
        if self.first is not None and url == self.first.url:  # the video itself, already checked: not resolved again
            checked = self.first
        else:
            checked = check_url(url, self.policy, schemes=FETCHED_SCHEMES)
        return PinnedHttpReader(checked, self.policy, self.timeout, self.ssl_context)


def _skip(response: http.client.HTTPResponse, count: int) -> None:
    while count > 0:
        chunk = response.read(min(count, 1 << 16))
        if not chunk:
            break
        count -= len(chunk)
