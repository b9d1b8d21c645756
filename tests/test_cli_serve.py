"""`flash-vstream serve` from the command line: it binds to 127.0.0.1, serves the page, and stops cleanly on
Ctrl-C; a --model that cannot be loaded is one line on stderr and exit status 1."""

import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request

import pytest

from .serve_helpers import free_port, wait_until


def test_serve_binds_to_loopback_and_stops_on_ctrl_c(tmp_path):
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONFAULTHANDLER": "1"}
    # A terminal's Ctrl-C reaches serve with SIGINT's default action; a test run started in the background (`cmd &`
    # in a script) ignores SIGINT, which its children inherit. A handled signal is reset to its default at exec.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        command = ["serve", "--model", "tiny", "--port", str(port), "--threads", "1"]
        server = subprocess.Popen([sys.executable, "-m", "flash_vstream_hf", *command],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, inherited)
    try:

        def page() -> str:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    return response.read().decode()
            except OSError:
                return ""

        assert wait_until(lambda: "Flash-VStream" in page() or server.poll() is not None, timeout=60, interval=0.5)
        assert server.poll() is None, server.stderr.read()[-2000:]
        server.send_signal(signal.SIGINT)
        try:
            _, err = server.communicate(timeout=90)
        except subprocess.TimeoutExpired:  # faulthandler writes every thread's stack on SIGABRT: say where it hangs
            server.send_signal(signal.SIGABRT)
            _, err = server.communicate(timeout=30)
            pytest.fail(f"serve did not stop within 90 s of Ctrl-C; its threads:\n{err[-6000:]}")
    finally:
        if server.poll() is None:
            server.kill()
    assert server.returncode == 0, err[-2000:]
    assert f"open http://127.0.0.1:{port}" in err and "model: tiny" in err


def test_serve_with_a_model_that_cannot_load(tmp_path, capsys):
    from flash_vstream_hf.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--model", str(tmp_path / "nothing-here")])
    assert exit_info.value.code == 1
    assert "no such folder" in capsys.readouterr().err


def test_ctrl_c_while_the_server_is_still_starting_stops_it(tiny, monkeypatch):
    # The page answers before gradio's launch() returns (it still checks the server over HTTP): a Ctrl-C then must
    # stop the server too, or its threads keep the process alive after Ctrl-C.
    from gradio import networking

    from flash_vstream_hf.serving import ServeApp, describe

    def interrupted(url: str) -> bool:
        raise KeyboardInterrupt

    monkeypatch.setattr(networking, "url_ok", interrupted)
    before = set(threading.enumerate())
    app, port = ServeApp(describe(*tiny, "tiny"), max_sessions=1), free_port()
    with pytest.raises(KeyboardInterrupt):
        app.launch(host="127.0.0.1", port=port, block=True)

    def refused() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return False
        except OSError:
            return True

    assert wait_until(refused, timeout=10), "the server still listens after Ctrl-C"
    left = [t for t in set(threading.enumerate()) - before if t.is_alive() and not t.daemon]
    assert wait_until(lambda: not [t for t in left if t.is_alive()], timeout=10), left
