"""The examples run end to end on the tiny model (the 4-bit one on CPU), on real encoded files and a live
HTTP stream served locally."""

import runpy
import sys
from pathlib import Path

import pytest

from flash_vstream_hf.tiny import write_synthetic_video

from .helpers import http_server

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("examples")
    write_synthetic_video(folder / "video.mp4", num_frames=80, fps=10)
    write_synthetic_video(folder / "live.mkv", num_frames=80, fps=10)
    return folder


def run_example(name: str, *args: str, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [name, *args])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")


def test_offline_qa(folder, monkeypatch, capsys):
    run_example("offline_qa.py", str(folder / "video.mp4"), "What is moving?", "--model", "tiny",
                "--max-new-tokens", "3", monkeypatch=monkeypatch)  # fmt: skip
    assert "8 frames -> 72 memory tokens" in capsys.readouterr().out


def test_questions_at_timestamps(folder, monkeypatch, capsys):
    run_example("questions_at_timestamps.py", str(folder / "video.mp4"), "--model", "tiny", "--max-new-tokens", "3",
                "--at", "0:04", "What is moving?", "--at", "2", "And before?", monkeypatch=monkeypatch)  # fmt: skip
    out = capsys.readouterr().out
    assert "[    2.0 s] And before?" in out and "(3 frames," in out
    assert "[    4.0 s] What is moving?" in out and "(5 frames," in out


def test_live_stream_over_http(folder, monkeypatch, capsys):
    with http_server(folder) as base:
        run_example("live_stream.py", f"{base}/live.mkv", "--model", "tiny", "--every", "0.5", "--duration", "3",
                    "--max-new-tokens", "3", monkeypatch=monkeypatch)  # fmt: skip
    out = capsys.readouterr().out
    assert "final: finished" in out and "frames=" in out


def test_gpu_4bit_on_cpu(folder, monkeypatch, capsys):
    run_example("gpu_4bit.py", str(folder / "video.mp4"), "--model", "tiny", "--device", "cpu", "--speed", "0",
                "--max-new-tokens", "3", monkeypatch=monkeypatch)  # fmt: skip
    out = capsys.readouterr().out
    assert "weights in memory" in out and "finished | t=00:07.0 | frames=8" in out
