"""The address guard on stream URLs typed into the web app (and posted to the cluster API): the server's own
network is off limits unless the operator opens it up.

Traffic goes to loopback only (127.0.0.0/8). Private, link-local and public ranges are tested at the guard itself,
with a stub resolver mapping test names to them and a decoder that fails the test if it is ever called."""

from __future__ import annotations

import ipaddress
import pathlib
import socket
import ssl
import subprocess

import av
import pytest

from flash_vstream_hf.commands import serve as serve_command
from flash_vstream_hf.serving import ServeApp, UserError, describe
from flash_vstream_hf.streaming.sources import LiveSource
from flash_vstream_hf.streaming.untrusted_url import open_untrusted_url
from flash_vstream_hf.streaming.url_guard import (
    ALLOW_FLAG,
    FFMPEG_SCHEMES,
    UrlPolicy,
    UrlRefused,
    check_url,
    ip_literal,
    non_public_reason,
)

from .helpers import http_server
from .serve_helpers import free_port

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LOOPBACK_SPELLINGS = [
    "http://127.0.0.1:{port}/clip.mp4",
    "http://localhost:{port}/clip.mp4",
    "http://LOCALHOST.:{port}/clip.mp4",
    "http://cam.localhost:{port}/clip.mp4",
    "http://2130706433:{port}/clip.mp4",  # decimal
    "http://0177.0.0.1:{port}/clip.mp4",  # octal
    "http://0x7f.0.0.1:{port}/clip.mp4",  # hex
    "http://0x7f000001:{port}/clip.mp4",
    "http://127.1:{port}/clip.mp4",  # short form
    "http://[::ffff:127.0.0.1]:{port}/clip.mp4",  # IPv4-mapped
    "http://[::127.0.0.1]:{port}/clip.mp4",  # IPv4-compatible
    "http://[64:ff9b::7f00:1]:{port}/clip.mp4",  # NAT64
    "http://[::1]:{port}/clip.mp4",
    "http://0.0.0.0:{port}/clip.mp4",
    "http://0:{port}/clip.mp4",
    "https://127.0.0.1:{port}/clip.mp4",
    "rtsp://127.0.0.1:{port}/clip",
    "rtmp://127.0.0.1:{port}/live/clip",
    "hls+http://127.0.0.1:{port}/list.m3u8",
    "tcp://127.0.0.1:{port}?listen=1",
    "udp://127.0.0.1:{port}",
    "file:///etc/passwd",
    "/dev/video0",
    "not a url",
]

STUB_ADDRESSES = {  # test name -> what a hostile DNS could answer (never dialled)
    "lan.test": ["10.0.0.5"],
    "office.test": ["172.20.1.1"],
    "home.test": ["192.168.1.20"],
    "cgnat.test": ["100.64.0.9"],
    "metadata.test": ["169.254.169.254"],
    "link6.test": ["fe80::1"],
    "ula.test": ["fd12:3456::1"],
    "mapped.test": ["::ffff:10.0.0.1"],
    "sixtofour.test": ["2002:a00:1::1"],
    "multicast.test": ["239.1.2.3"],
    "reserved.test": ["240.0.0.1"],
    "broadcast.test": ["255.255.255.255"],
    "unspecified.test": ["0.0.0.0"],
    "half-public.test": ["93.184.216.34", "10.0.0.1"],  # every address must be public
}


@pytest.fixture
def second_server(media):
    """Another loopback server, on 127.0.0.2: what a redirect or a playlist must not reach."""
    running = http_server(media, host="127.0.0.2")
    with running:
        yield running


@pytest.fixture
def app(tiny):
    def make(policy: UrlPolicy | None = None) -> ServeApp:
        made = ServeApp(describe(*tiny, "tiny"), max_sessions=2, url_policy=policy)
        apps.append(made)
        return made

    apps: list[ServeApp] = []
    yield make
    for made in apps:
        made.close()


@pytest.fixture
def no_decoder(monkeypatch):
    """Fails the test if anything reaches the decoder."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"the decoder was called with {args[:1]}")

    monkeypatch.setattr(av, "open", refuse)


def stub_resolver(table: dict[str, list[str]], calls: list[str] | None = None):
    def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise socket.gaierror(f"no such test name {host}")
        return table[host]

    return resolve


def play(viewer, frames: int = 3) -> bool:
    return viewer.wait_for_frames(frames, timeout=30)


# -- the guard itself -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host, address",
    [("2130706433", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"), ("0x7f.1", "127.0.0.1"), ("127.1", "127.0.0.1"),
     ("10.1", "10.0.0.1"), ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"), ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
     ("fe80::1%eth0", "fe80::1"), ("0", "0.0.0.0")],
)  # fmt: skip
def test_numeric_spellings_are_read_as_the_addresses_they_are(host, address):
    assert ip_literal(host) == ipaddress.ip_address(address)


@pytest.mark.parametrize("name", ["example.com", "1.2.3.4.nip.io", "camera-7.lan", "localhost"])
def test_names_are_not_numbers(name):
    assert ip_literal(name) is None


@pytest.mark.parametrize(
    "address, reason",
    [("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.0.0.1", "private"), ("172.31.255.1", "private"),
     ("192.168.0.1", "private"), ("100.64.0.1", "carrier-grade NAT"), ("169.254.169.254", "link-local"),
     ("fe80::1", "link-local"), ("fc00::1", "private"), ("fd00::1", "private"), ("224.0.0.1", "multicast"),
     ("ff02::1", "multicast"), ("240.0.0.1", "reserved"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
     ("::ffff:169.254.169.254", "link-local"), ("::10.0.0.1", "private"), ("64:ff9b::a00:1", "private"),
     ("2002:7f00:1::", "loopback"), ("192.0.2.1", "private")],
)  # fmt: skip
def test_every_non_public_range_is_named(address, reason):
    assert reason in non_public_reason(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:93.184.216.34"])
def test_public_addresses_pass(address):
    assert non_public_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("name", sorted(STUB_ADDRESSES))
def test_a_name_resolving_to_a_non_public_address_is_refused_before_the_decoder(name, no_decoder):
    policy = UrlPolicy(resolver=stub_resolver(STUB_ADDRESSES))
    with pytest.raises(UrlRefused, match=f"{name} is .*; this server opens only public addresses.*{ALLOW_FLAG}"):
        open_untrusted_url(f"http://{name}/live.m3u8", policy)


@pytest.mark.parametrize("url", ["http://no-such-name.test/x.mp4", "http://" + "a" * 64 + ".test/", "http://xn--/"])
def test_a_name_that_does_not_resolve_is_refused_as_such(url, no_decoder):
    with pytest.raises(UrlRefused, match="does not resolve to any address"):
        open_untrusted_url(url, UrlPolicy(resolver=stub_resolver({})))
    with pytest.raises(UrlRefused, match="does not resolve to any address"):
        open_untrusted_url("http://" + "a" * 70 + ".invalid/", UrlPolicy())  # the system resolver: IDNA refuses it


def test_a_public_name_is_checked_once_and_pinned_to_its_address(no_decoder):
    calls: list[str] = []
    policy = UrlPolicy(resolver=stub_resolver({"video.test": ["93.184.216.34"]}, calls))
    source = open_untrusted_url("https://video.test/live.m3u8", policy)  # nothing connects until it is started
    assert isinstance(source, LiveSource) and calls == ["video.test"]
    first = source.io_open.first
    assert (first.host, first.address, first.port) == ("video.test", "93.184.216.34", 443)


def test_ffmpeg_schemes_go_only_where_the_operator_allows(no_decoder):
    resolver = stub_resolver({"camera.test": ["93.184.216.34"], "lan-camera.test": ["192.168.1.20"]})
    with pytest.raises(UrlRefused, match="follows server redirects"):
        check_url("rtsp://camera.test/stream", UrlPolicy(resolver=resolver))  # public, but FFmpeg follows redirects
    lan = UrlPolicy.from_allow_list(["192.168.1.0/24"])
    lan = UrlPolicy(allowed_networks=lan.allowed_networks, resolver=resolver)
    checked = check_url("rtsp://admin:pw@lan-camera.test/stream?channel=1", lan)
    assert checked.pinned_url == "rtsp://admin:pw@192.168.1.20:554/stream?channel=1"
    for option in ("multicast", "udp", "listen=1", "localport=5000"):
        with pytest.raises(UrlRefused, match="bind ports, listen or join a multicast group"):
            check_url(f"rtsp://lan-camera.test/stream?{option}", lan)


def test_the_allow_list_takes_addresses_networks_and_names_and_nothing_else():
    policy = UrlPolicy.from_allow_list(["192.168.1.0/24", "10.0.0.7", "Camera.Lan"])
    assert policy.allows_address(ipaddress.ip_address("192.168.1.99"))
    assert policy.allows_address(ipaddress.ip_address("10.0.0.7"))
    assert not policy.allows_address(ipaddress.ip_address("10.0.0.8"))
    assert policy.allows_host("camera.lan.") and not policy.allows_host("other.lan")
    with pytest.raises(ValueError, match="not an address, a CIDR or a host name"):
        UrlPolicy.from_allow_list(["http://camera/"])


# -- what reaches a real server on loopback -----------------------------------------------------------------------


def test_no_refused_spelling_of_this_machine_reaches_it(app, server):
    viewer = app().registry.get("tab")
    for spelling in LOOPBACK_SPELLINGS:
        url = spelling.format(port=server.port)
        with pytest.raises(UserError) as refused:
            viewer.play_url(url)
        assert "refused" in str(refused.value) or "not a URL" in str(refused.value), url
    assert server.requests == []
    assert viewer.status() is None  # nothing was started


def test_a_url_that_would_make_the_server_listen_opens_no_port(app):
    port = free_port()
    for policy in (None, UrlPolicy(allow_private=True)):
        viewer = app(policy).registry.get("tab")
        with pytest.raises(UserError, match="the tcp scheme is not opened"):
            viewer.play_url(f"tcp://127.0.0.1:{port}?listen=1")
    with socket.socket() as probe:  # nothing listens there
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_with_the_operator_flag_a_loopback_url_plays(app, server):
    viewer = app(UrlPolicy(allow_private=True)).registry.get("tab")
    closed = free_port()
    with pytest.raises(UserError, match=f"cannot play http://127.0.0.1:{closed}/clip.mp4: .*[Cc]onnection refused"):
        viewer.play_url(f"http://127.0.0.1:{closed}/clip.mp4")  # allowed, but nothing answers there
    viewer.play_url(f"{server.url}/clip.mp4")
    assert play(viewer)
    assert server.requests and all(line.startswith("GET /clip.mp4 ") for line in server.requests)


def test_an_allow_list_opens_just_those_addresses(app, server, second_server):
    viewer = app(UrlPolicy.from_allow_list(["127.0.0.1/32"])).registry.get("tab")
    with pytest.raises(UserError, match="127.0.0.2 is a loopback address"):
        viewer.play_url(f"{second_server.url}/clip.mp4")
    viewer.play_url(f"{server.url}/clip.mp4")
    assert play(viewer)
    assert second_server.requests == []


def test_a_redirect_is_checked_before_it_is_followed(app, server, second_server):
    viewer = app(UrlPolicy.from_allow_list(["127.0.0.1/32"])).registry.get("tab")
    server.redirect("/elsewhere.mp4", f"{second_server.url}/clip.mp4")
    server.redirect("/secrets.mp4", "file:///etc/passwd")
    server.redirect("/moved.mp4", "/clip.mp4")
    with pytest.raises(UserError, match="redirects to a URL that is not opened.*127.0.0.2"):
        viewer.play_url(f"{server.url}/elsewhere.mp4")
    with pytest.raises(UserError, match="redirects to a URL that is not opened.*file"):
        viewer.play_url(f"{server.url}/secrets.mp4")
    assert second_server.requests == []
    viewer.play_url(f"{server.url}/moved.mp4")  # a redirect that stays inside the policy is followed
    assert play(viewer)
    assert "GET /clip.mp4 HTTP/1.1" in server.requests


def test_an_hls_playlist_reaches_only_checked_addresses(app, server, second_server, media):
    playlist = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n"
    for base in (server.url, second_server.url):
        playlist += f"#EXTINF:2.0,\n{base}/clip.ts\n"
    (media / "list.m3u8").write_text(playlist + "#EXT-X-ENDLIST\n")
    viewer = app(UrlPolicy.from_allow_list(["127.0.0.1/32"])).registry.get("tab")
    viewer.play_url(f"{server.url}/list.m3u8")
    assert viewer._session.wait(timeout=30)
    status = viewer.status()  # the allowed segment played (2 s at 1 fps), then the stream stopped, saying why
    assert status.frames_ingested == 2 and status.state == "failed"
    assert f"{second_server.url}/clip.ts is refused: 127.0.0.2 is a loopback address" in status.error
    assert second_server.requests == []
    assert "GET /clip.ts HTTP/1.1" in server.requests


def test_a_name_that_resolves_elsewhere_the_second_time_is_connected_to_as_checked(app, server, second_server):
    answers = {"rebind.test": ["127.0.0.1"]}
    calls: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        found = stub_resolver(answers, calls)(host, port)
        answers["rebind.test"] = ["127.0.0.2"]  # every later answer points elsewhere
        return found

    allowed = UrlPolicy.from_allow_list(["127.0.0.1/32"])
    policy = UrlPolicy(allowed_networks=allowed.allowed_networks, resolver=rebinding)
    viewer = app(policy).registry.get("tab")
    viewer.play_url(f"http://rebind.test:{server.port}/clip.mp4")
    assert play(viewer)
    assert calls == ["rebind.test"]  # resolved once
    assert server.requests and second_server.requests == []


def test_https_is_fetched_from_the_checked_address_with_the_name_for_tls(server, media, tmp_path, tiny):
    certificate, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=video.test",
         "-addext", "subjectAltName=DNS:video.test", "-keyout", str(key), "-out", str(certificate)],
        check=True, capture_output=True,
    )  # fmt: skip
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(certificate, key)
    server.server.socket = tls.wrap_socket(server.server.socket, server_side=True)
    allowed = UrlPolicy.from_allow_list(["127.0.0.1/32"])
    policy = UrlPolicy(allowed_networks=allowed.allowed_networks, resolver=stub_resolver({"video.test": ["127.0.0.1"]}))
    trusting = ssl.create_default_context(cafile=str(certificate))
    source = open_untrusted_url(f"https://video.test:{server.port}/clip.mp4", policy, ssl_context=trusting)
    frames = list(source.frames())
    assert len(frames) == 4 and "GET /clip.mp4 HTTP/1.1" in server.requests


@pytest.mark.parametrize("scheme", FFMPEG_SCHEMES)
def test_each_ffmpeg_scheme_offered_is_one_pyav_opens(scheme):
    port = free_port()  # closed: the open fails on the connection, not on an unknown protocol
    source = open_untrusted_url(f"{scheme}://127.0.0.1:{port}/stream", UrlPolicy(allow_private=True), timeout=2)
    with pytest.raises(ConnectionError) as failed:
        source.open()
    assert "Protocol not found" not in str(failed.value) and "refused" in str(failed.value).lower()


# -- the operator's switches --------------------------------------------------------------------------------------


def test_serve_takes_the_flag_and_an_allow_list_and_refuses_a_bad_entry(capsys):
    parser = __import__("argparse").ArgumentParser()
    serve_command.add_arguments(parser)
    default = serve_command.url_policy(parser.parse_args([]))
    assert default == UrlPolicy()
    opened = serve_command.url_policy(parser.parse_args([ALLOW_FLAG]))
    assert opened.allow_private
    listed = serve_command.url_policy(parser.parse_args(["--allow-url-host", "10.1.0.0/16", "--allow-url-host", "cam"]))
    assert listed.allowed_hosts == ("cam",) and listed.allows_address(ipaddress.ip_address("10.1.2.3"))
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["--allow-url-host", "http://x/"])
    assert exited.value.code == 2 and "not an address, a CIDR or a host name" in capsys.readouterr().err


def test_the_exported_space_keeps_the_default_policy():
    from flash_vstream_hf import serving

    text = (pathlib.Path(serving.__file__).parent / "space_app.py").read_text()
    assert "ServeApp(" in text and "url_policy" not in text and "allow_private" not in text
