"""`flash-vstream chat`: questions typed while the stream plays (piped here), commands, memory save and resume,
the 4-bit path, and a clear error for a bad source."""

import io
import sys

import pytest
import torch

from flash_vstream_hf.cli import main
from flash_vstream_hf.tiny import write_synthetic_video


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see test_streaming_session.py
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_synthetic_video(tmp_path_factory.mktemp("v") / "video.mp4", num_frames=100, fps=10)


def chat(monkeypatch, capsys, lines: list[str], *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(line + "\n" for line in lines)))
    code = main(["chat", *args, "--model", "tiny", "--max-new-tokens", "3"])
    return code, capsys.readouterr().out


def test_questions_commands_and_memory_resume(video, tmp_path, monkeypatch, capsys):
    saved = tmp_path / "memory.safetensors"
    code, out = chat(monkeypatch, capsys, ["/wait 4", "What is moving?", "/wait", "/status", "/frobnicate",
                                           f"/save {saved}", "And now?", "/quit", "never asked"],
                     video, "--speed", "20")  # fmt: skip
    assert code == 0
    lines = out.splitlines()
    answers = [line for line in lines if line.startswith("   [memory:")]
    assert len(answers) == 2  # the line after /quit is never asked
    assert int(answers[0].split()[1]) >= 4  # asked after /wait 4: at least 4 frames in memory
    assert "[memory: 10 frames, 72 tokens, up to t=9.0 s" in answers[1]  # after /wait: the whole video
    assert any(line.startswith("finished | t=00:09.0 | frames=10") for line in lines)  # /status
    assert "unknown command /frobnicate" in out
    assert saved.is_file()

    code, out = chat(monkeypatch, capsys, ["/wait", "Still there?"], video, "--speed", "0", "--resume", str(saved))
    assert code == 0 and "[memory: 20 frames" in out  # the saved 10 frames and 10 more


def test_four_bit_tiny_model_answers(video, monkeypatch, capsys):
    code, out = chat(monkeypatch, capsys, ["/wait", "What is moving?"], video, "--speed", "0", "--load-in-4bit",
                     "--device", "cpu")  # fmt: skip
    assert code == 0 and "[memory: 10 frames" in out


def test_a_bad_source_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["chat", str(tmp_path / "missing.mp4"), "--model", "tiny"]) == 1
    assert "missing.mp4" in capsys.readouterr().err
    assert main(["chat", "rtsp://127.0.0.1:9/none", "--model", "tiny"]) == 1
    assert "cannot open live source" in capsys.readouterr().err
