"""Which URLs a stranger may make this server open: the address guard of the web app and the cluster API.

A URL typed into a public page (or posted to the cluster's HTTP API) comes from someone who must not reach the
server's own network through it: its loopback services, its LAN, cloud metadata at 169.254.169.254. By default a
URL is opened only when every address its host resolves to is public. The check runs before any connection:

- Host names are resolved once (`Resolver`); the caller then connects to the checked address (`CheckedUrl.address`),
  never resolving again, so a name that answers differently the second time (DNS rebinding) cannot slip through.
- Numeric hosts are read the way the C library reads them (`socket.inet_aton`: `2130706433`, `0177.0.0.1`,
  `0x7f.1`, `127.1` are all 127.0.0.1), and IPv6 forms that embed an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`,
  IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`, Teredo) are judged by the address they carry.
- `localhost` and names under `.localhost` are loopback whatever a resolver says (RFC 6761).

Only `http` and `https` are opened for a stranger by default: this package fetches them itself (`guarded_http.py`)
and checks every redirect and every playlist entry the same way. RTSP and RTMP are opened by FFmpeg's own network
code, which follows server redirects this package cannot see, so they are allowed only to addresses the operator
opened up (`UrlPolicy.allow_private` or an allow-list). Raw `tcp`/`udp` inputs bind or listen on the host and are
never opened for a stranger, nor are FFmpeg's URL options that make an RTSP input bind or join a multicast group.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> every address the host resolves to; the default asks the system resolver (getaddrinfo)
Resolver = Callable[[str, int], list[str]]

FETCHED_SCHEMES = ("http", "https")  # fetched by this package, redirects and playlist entries checked
FFMPEG_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps")  # FFmpeg's own network code: only where the operator allows
DEFAULT_PORTS = {"http": 80, "https": 443, "rtsp": 554, "rtsps": 322, "rtmp": 1935, "rtmps": 443}
# RTSP URL options FFmpeg reads from the query (`?udp`, `?multicast`...): they choose transports that bind ports
# or join multicast groups. Other schemes' listen/bind options (`listen`, `localport`, `localaddr`) belong to the
# tcp/udp/srt inputs, which are not opened at all.
FFMPEG_URL_OPTIONS = {"udp", "multicast", "tcp", "http", "https", "filter_src", "listen", "localport", "localaddr"}
ALLOW_FLAG = "--allow-private-urls"  # the operator's opt-in, named in every refusal

# Embedded-IPv4 prefixes that `ipaddress` does not unwrap itself.
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT: private to the provider


class UrlRefused(ValueError):
    """A URL this server will not open for a stranger; the message says why and how the operator can allow it."""


@dataclass(frozen=True)
class UrlPolicy:
    """What a stranger's URL may reach.

    Args:
        allow_private: open URLs to any address, private, loopback and link-local included (the operator's
            `--allow-private-urls`); also allows RTSP/RTMP to any host.
        allowed_networks: addresses (CIDRs) the operator opened up, e.g. a camera LAN `192.168.1.0/24`.
        allowed_hosts: host names the operator opened up (compared case-insensitively, before resolving).
        resolver: how host names are resolved (tests map names to addresses without any DNS).
    """

    allow_private: bool = False
    allowed_networks: tuple[Network, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    resolver: Resolver | None = field(default=None, compare=False)

    @classmethod
    def from_allow_list(cls, entries: Iterable[str], allow_private: bool = False) -> UrlPolicy:
        """A policy from the operator's allow-list: each entry an address, a CIDR or a host name.
        `ValueError` naming an entry that is none of these."""
        networks, hosts = [], []
        for entry in entries:
            entry = entry.strip()
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if not _is_host_name(entry):
                    raise ValueError(f"not an address, a CIDR or a host name: {entry!r}") from None
                hosts.append(_normal_host(entry))
        return cls(allow_private=allow_private, allowed_networks=tuple(networks), allowed_hosts=tuple(hosts))

    def allows_host(self, host: str) -> bool:
        return self.allow_private or _normal_host(host) in self.allowed_hosts

    def allows_address(self, address: Address) -> bool:
        return self.allow_private or any(address in network for network in self.allowed_networks)


@dataclass(frozen=True)
class CheckedUrl:
    """A URL that passed the guard. `address` is the one to connect to (the resolved, checked address);
    `host` stays the name for the HTTP `Host` header and TLS."""

    url: str
    scheme: str
    host: str
    port: int
    address: str

    @property
    def pinned_url(self) -> str:
        """The URL with its host replaced by the checked address (what FFmpeg's own network code is given)."""
        parts = urllib.parse.urlsplit(self.url)
        userinfo = parts.netloc.rpartition("@")[0]
        address = f"[{self.address}]" if ":" in self.address else self.address
        netloc = f"{userinfo + '@' if userinfo else ''}{address}:{self.port}"
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def check_url(url: str, policy: UrlPolicy, schemes: tuple[str, ...] | None = None) -> CheckedUrl:
    """Check a stranger's `url` against `policy` before anything connects; `UrlRefused` says why not.

    `schemes` narrows what may be opened (a redirect or a playlist entry must be http(s), say); by default the
    fetched schemes, plus RTSP/RTMP where the operator allowed the host."""
    parts = _split(url)
    scheme = parts.scheme.lower()
    allowed_schemes = schemes or FETCHED_SCHEMES + FFMPEG_SCHEMES
    if scheme not in allowed_schemes:
        raise UrlRefused(
            f"{_shown(url)} is refused: the {scheme or 'missing'} scheme is not opened for a visitor; give an "
            f"{' or '.join(s + '://' for s in allowed_schemes[:2])} URL"
            + (" (RTSP/RTMP too where the operator allows the host)" if schemes is None else "")
        )
    host = parts.hostname or ""
    if not host:
        raise UrlRefused(f"{_shown(url)} is refused: it names no host")
    port = _port(parts, scheme, url)
    if scheme in FFMPEG_SCHEMES:
        _refuse_ffmpeg_options(parts, url)
    addresses = resolve(host, port, policy.resolver)
    if not addresses:
        raise UrlRefused(f"{_shown(url)} is refused: its host {host} does not resolve to any address")
    host_allowed = policy.allows_host(host)
    for address in addresses:
        reason = non_public_reason(address)
        if reason is not None and not (host_allowed or policy.allows_address(address)):
            named = f"{address} is" if ip_literal(host) is not None else f"{host} is {address},"
            raise UrlRefused(
                f"{_shown(url)} is refused: {named} {reason}; this server opens only public addresses "
                f"for a visitor (the operator can allow private ones: flash-vstream serve {ALLOW_FLAG})"
            )
    if scheme in FFMPEG_SCHEMES and not (host_allowed or all(policy.allows_address(a) for a in addresses)):
        raise UrlRefused(
            f"{_shown(url)} is refused: {scheme}:// is opened by FFmpeg, which follows server redirects this server "
            f"cannot check, so it is opened only for hosts the operator allows (flash-vstream serve {ALLOW_FLAG}, "
            "or an allow-list); give an http(s):// URL"
        )
    return CheckedUrl(url=url, scheme=scheme, host=_normal_host(host), port=port, address=str(addresses[0]))


def resolve(host: str, port: int, resolver: Resolver | None = None) -> list[Address]:
    """Every address `host` stands for: a numeric host as the C library reads it (no DNS), `localhost` as
    loopback, any other name through `resolver` (default: the system's getaddrinfo)."""
    literal = ip_literal(host)
    if literal is not None:
        return [literal]
    name = _normal_host(host)
    if name == "localhost" or name.endswith(".localhost"):
        return [ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1")]
    try:
        found = (resolver or _system_resolver)(name, port)
    except (OSError, UnicodeError):  # no such name, or one no resolver can encode (IDNA)
        return []
    addresses: list[Address] = []
    for text in found:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def ip_literal(host: str) -> Address | None:
    """`host` read as a numeric address, or None for a name: IPv6 with or without brackets (a zone id such as
    `%eth0` does not change what the address is), IPv4 in any spelling the C library's `inet_aton` reads."""
    text = host.strip().strip("[]")
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text.split("%", 1)[0])
        except ValueError:
            return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(text.rstrip(".")))
    except OSError:
        return None


def non_public_reason(address: Address) -> str | None:
    """Why `address` is not a public unicast address (`"a loopback address"`, ...), or None when it is one."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        inner = non_public_reason(embedded)
        return None if inner is None else f"{inner} (embedded in an IPv6 address)"
    checks = (
        (address.is_unspecified, "the unspecified address (this host)"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (isinstance(address, ipaddress.IPv4Address) and address in _SHARED, "a carrier-grade NAT address"),
        (address.is_private and not address.is_reserved, "a private address"),
        (address.is_reserved, "a reserved address"),
        (not address.is_global, "not a public address"),
    )
    return next((reason for failed, reason in checks if failed), None)


def _embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client's address
    value = int(address)
    if value >> 32 == 0 and value > 1:  # IPv4-compatible ::a.b.c.d (not :: or ::1)
        return ipaddress.IPv4Address(value)
    if any(address in prefix for prefix in _NAT64):
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    return None


def _split(url: str) -> urllib.parse.SplitResult:
    if not isinstance(url, str) or not url.strip():
        raise UrlRefused("give a stream URL (it is empty)")
    if any(ord(char) < 33 for char in url.strip()):
        raise UrlRefused(f"{_shown(url)} is refused: it holds spaces or control characters")
    try:
        return urllib.parse.urlsplit(url.strip())
    except ValueError as error:
        raise UrlRefused(f"{_shown(url)} is not a URL ({error})") from error


def _port(parts: urllib.parse.SplitResult, scheme: str, url: str) -> int:
    try:
        port = parts.port
    except ValueError:
        raise UrlRefused(f"{_shown(url)} is refused: its port is not a number from 0 to 65535") from None
    return DEFAULT_PORTS[scheme] if port is None else port


def _refuse_ffmpeg_options(parts: urllib.parse.SplitResult, url: str) -> None:
    for item in parts.query.split("&"):
        name = item.partition("=")[0].lower()
        if name in FFMPEG_URL_OPTIONS:
            raise UrlRefused(
                f"{_shown(url)} is refused: the URL option {name!r} makes FFmpeg bind ports, listen or join a "
                "multicast group on this server"
            )


def _system_resolver(host: str, port: int) -> list[str]:
    return [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def _normal_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _is_host_name(text: str) -> bool:
    labels = _normal_host(text).split(".")
    return all(label and len(label) <= 63 and label.replace("-", "").isalnum() for label in labels)


def _shown(url) -> str:
    text = repr(url) if not isinstance(url, str) else url.strip()
    return text if len(text) <= 200 else text[:200] + "..."
