"""`flash-vstream serve` from the command line: it binds to 127.0.0.1, serves the page, and stops cleanly on
Ctrl-C; a --model that cannot be loaded is one line on stderr and exit status 1."""

import os
import signal
import subprocess
import sys
import urllib.request

import pytest

from .serve_helpers import free_port, wait_until


def test_serve_binds_to_loopback_and_stops_on_ctrl_c(tmp_path):
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    server = subprocess.Popen(
        [sys.executable, "-m", "flash_vstream_hf", "serve", "--model", "tiny", "--port", str(port), "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
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
        _, err = server.communicate(timeout=90)  # timed out at 30 s twice in full suites on the slow machine of 12-02
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
