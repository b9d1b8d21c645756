"""`flash-vstream chat`: questions typed while the stream plays (piped here), commands, memory save and resume,
the 4-bit path, and a clear error for a bad source."""

import io
import sys

import pytest

from flash_vstream_hf.cli import main
from flash_vstream_hf.commands import chat as chat_command
from flash_vstream_hf.commands import common
from flash_vstream_hf.tiny import write_synthetic_video

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_synthetic_video(tmp_path_factory.mktemp("v") / "video.mp4", num_frames=100, fps=10)


def chat(monkeypatch, capsys, lines: list[str], *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(line + "\n" for line in lines)))
    code = main(["chat", *args, "--model", "tiny", "--max-new-tokens", "3"])
    return code, capsys.readouterr().out


def test_questions_commands_and_memory_resume(video, tmp_path, monkeypatch, capsys):
    saved = tmp_path / "memory.safetensors"
    code, out = chat(monkeypatch, capsys, ["/wait 4", "What is moving?", "/wait x", "/wait", "/status", "/frobnicate",
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
    assert "usage: /wait [N] (N a number of frames), got 'x'" in out  # a typo does not end the chat
    assert saved.is_file()

    code, out = chat(monkeypatch, capsys, ["/wait", "Still there?"], video, "--speed", "0", "--resume", str(saved))
    assert code == 0 and "[memory: 20 frames" in out  # the saved 10 frames and 10 more


def test_a_save_that_fails_keeps_the_chat_going(video, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, out = chat(monkeypatch, capsys, ["/wait", f"/save {blocker / 'memory.safetensors'}", "Still there?",
                                           f"/save {tmp_path / 'ok.safetensors'}"],
                     video, "--speed", "0")  # fmt: skip
    assert code == 0
    assert f"error: cannot save the memory to {blocker / 'memory.safetensors'}:" in out
    assert "[memory: 10 frames" in out  # the question after the failed save is answered from the same session
    assert (tmp_path / "ok.safetensors").is_file()


def test_a_save_memory_on_exit_that_fails_is_an_error(video, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(sys, "stdin", io.StringIO("/wait\n"))
    code = main(
        ["chat", video, "--model", "tiny", "--speed", "0", "--save-memory", str(blocker / "memory.safetensors")]
    )
    captured = capsys.readouterr()
    assert code == 1 and "finished | t=00:09.0" in captured.out
    assert f"error: cannot save the memory to {blocker / 'memory.safetensors'}:" in captured.err


@pytest.mark.parametrize("stdin", [None, "closed"])
def test_chat_without_standard_input_exits_with_a_message(video, monkeypatch, capsys, stdin):
    if stdin == "closed":
        stdin = io.StringIO("")
        stdin.close()
    monkeypatch.setattr(sys, "stdin", stdin)
    assert main(["chat", video, "--model", "tiny"]) == 2
    captured = capsys.readouterr()
    assert "standard input is closed" in captured.err and "Traceback" not in captured.err


def test_four_bit_tiny_model_answers(video, monkeypatch, capsys):
    loaded = []

    def load_and_keep(args):
        loaded.append(common.load_model(args))
        return loaded[-1]

    monkeypatch.setattr(chat_command, "load_model", load_and_keep)
    code, out = chat(monkeypatch, capsys, ["/wait", "What is moving?"], video, "--speed", "0", "--load-in-4bit",
                     "--device", "cpu")  # fmt: skip
    assert code == 0 and "[memory: 10 frames" in out
    model, _ = loaded[0]
    assert model.is_quantized and model.config.quantization_config.load_in_4bit


def test_a_bad_source_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["chat", str(tmp_path / "missing.mp4"), "--model", "tiny"]) == 1
    assert "missing.mp4" in capsys.readouterr().err
    assert main(["chat", "rtsp://127.0.0.1:9/none", "--model", "tiny"]) == 1
    assert "cannot open live source" in capsys.readouterr().err


def test_a_terminal_gets_a_live_status_bar(video):
    """The interactive path, in a pseudo-terminal: the prompt's bottom bar shows the stream's status."""
    import fcntl
    import os
    import pty
    import re
    import select
    import struct
    import subprocess
    import termios
    import time

    terminal, child_end = pty.openpty()
    fcntl.ioctl(child_end, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))
    command = [sys.executable, "-m", "flash_vstream_hf", "chat", video, "--model", "tiny", "--speed", "5",
               "--max-new-tokens", "3"]  # fmt: skip
    child = subprocess.Popen(command, stdin=child_end, stdout=child_end, stderr=child_end, start_new_session=True)
    os.close(child_end)
    screen = b""

    def read_until(pattern: bytes, seconds: float = 60) -> bool:
        nonlocal screen
        deadline = time.monotonic() + seconds
        while not re.search(pattern, screen):
            if time.monotonic() > deadline:
                return False
            if select.select([terminal], [], [], 0.1)[0]:
                try:
                    chunk = os.read(terminal, 65536)
                except OSError:  # the child has exited
                    return bool(re.search(pattern, screen))
                screen += chunk
                if b"\x1b[6n" in chunk:  # prompt_toolkit asks where the cursor is: answer as a terminal does
                    os.write(terminal, b"\x1b[1;1R")
        return True

    try:
        assert read_until(rb"question>"), screen.decode(errors="replace")
        assert read_until(rb"running \| t=\d\d:\d\d\.\d \| frames=\d+ \| ingest=[\d.]+ fps \| memory=\d+ tokens")
        os.write(terminal, b"What is moving?\r")
        assert read_until(rb"\[memory: \d+ frames")
        os.write(terminal, b"/quit\r")
        assert read_until(rb"(stopped|finished) \| t=")
        assert child.wait(30) == 0
    finally:
        child.kill()
        child.wait()
        os.close(terminal)
