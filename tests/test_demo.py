"""`flash-vstream demo --model tiny`: the whole pipeline on the tiny random model, which says what it is (the
default demo, the trained model, is tested in tests/test_demo_model.py)."""

import subprocess
import sys

from flash_vstream_hf.cli import main


def test_demo_runs_the_whole_pipeline(capsys):
    assert main(["demo", "--model", "tiny", "--seconds", "12", "--max-new-tokens", "3"]) == 0
    out = capsys.readouterr().out
    assert "TINY MODEL WITH RANDOM WEIGHTS" in out
    assert "[offline] 12 frames" in out
    assert "frames= 10" in out  # a question asked mid-stream
    assert "identical: True" in out  # the saved memory restores exactly


def test_module_entry_point_lists_the_commands():
    result = subprocess.run([sys.executable, "-m", "flash_vstream_hf", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "demo" in result.stdout
