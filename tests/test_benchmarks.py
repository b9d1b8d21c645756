"""The benchmark suite runs end to end at `--quick` sizes and writes well-formed tables and JSON.

Nothing here asserts speed: figures come from `flash-vstream bench`, never from unit tests.
"""

from __future__ import annotations

import contextlib
import io
import json
import runpy
import sys

import pytest
import torch
from transformers.utils import logging as hf_logging

from flash_vstream_hf.benchmarks.baselines import NaiveContext, RecentWindow, released_memory
from flash_vstream_hf.benchmarks.report import evaluate_targets, markdown_table
from flash_vstream_hf.benchmarks.sizes import QUICK
from flash_vstream_hf.cli import main as cli_main
from flash_vstream_hf.modeling.abstract_memory_attention import FlashVStreamAbstractMemoryAttention
from flash_vstream_hf.modeling.star_memory import StarLayout, consolidate, empty_state, read_out
from flash_vstream_hf.tiny import tiny_config

# the progress bars of a run, one per long step
PROGRESS_STEPS = ("Streaming STAR + window", "Timing STAR updates", "Released algorithm", "Building memories",
                  "Timing TTFT", "Ingest")  # fmt: skip


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One `flash-vstream bench --quick` run shared by the tests below, progress bars on: (stdout, parsed JSON,
    JSON path, stderr)."""
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    stdout, stderr = io.StringIO(), io.StringIO()
    with progress_bars(True), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        assert cli_main(["bench", "--quick", "--json", str(path)]) == 0
    return stdout.getvalue(), json.loads(path.read_text()), path, stderr.getvalue()


@contextlib.contextmanager
def progress_bars(enabled: bool):
    """transformers' progress-bar switch, restored on exit."""
    before = hf_logging.is_progress_bar_enabled()
    (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
    try:
        yield
    finally:
        (hf_logging.enable_progress_bar if before else hf_logging.disable_progress_bar)()


def test_quick_run_prints_every_table(quick_run):
    stdout, _, _, _ = quick_run
    for heading in ("Memory update cost per frame", "Peak RSS vs frames seen", "Time to first token",
                    "Ingest with the ViT-L/14-shaped vision tower", "Targets"):  # fmt: skip
        assert heading in stdout
    tables, block = [], []
    for line in stdout.splitlines() + [""]:
        if line.startswith("|"):
            block.append(line)
        elif block:
            tables.append(block)
            block = []
    assert len(tables) == 5
    for table in tables:
        widths = {len(line.strip("|").split("|")) for line in table}
        assert len(widths) == 1, table  # every row has as many cells as the header
        assert set(table[1]) <= set("|:-") and len(table) >= 3, table


def test_quick_run_json_is_complete(quick_run):
    _, results, _, _ = quick_run
    assert results["sizes"] == "quick"
    assert results["machine"]["cpu_count"] >= 1 and results["machine"]["matmul_gflops_fp32"] > 0

    rows = results["update"]["rows"]
    for method, frames in (("star", QUICK.update_frames), ("window", QUICK.update_frames),
                           ("original", QUICK.original_frames)):  # fmt: skip
        measured = {r["frames_seen"]: r for r in rows if r["method"] == method}
        assert sorted(measured) == sorted(frames), method
        assert all(r["ms_per_frame"] > 0 for r in measured.values()), method
    star = [r for r in rows if r["method"] == "star"]
    assert all(r["peak_rss_mb"] > 0 and r["static_ms_per_frame"] > 0 for r in star)
    # the STAR state is bounded: same size at every checkpoint; the released buffer grows with frames seen
    assert len({r["state_mb"] for r in star}) == 1
    original = sorted((r for r in rows if r["method"] == "original"), key=lambda r: r["frames_seen"])
    assert original[0]["state_mb"] < original[-1]["state_mb"]

    ttft = results["ttft"]
    naive_max = ttft["naive_max_frames"]
    for row in ttft["rows"]:
        if row["method"] == "naive" and row["frames_seen"] > naive_max:
            assert row["seconds"] is None and "context" in row["note"]
        else:
            assert row["seconds"] > 0, row
        if row["method"] == "star":
            assert row["tokens"] <= 681
    assert {r["frames_seen"] for r in ttft["rows"]} == set(QUICK.ttft_frames) | {naive_max}

    ingest = results["ingest"]["rows"]
    assert {r["batch"] for r in ingest} == {1, QUICK.ingest_batch}
    assert all(r["fps"] > 0 and 0 <= r["consolidation_share"] <= 1 for r in ingest)

    assert len(results["targets"]) == 5
    assert all(t["met"] is None for t in results["targets"])  # --quick never claims a target


def test_quick_run_shows_progress_bars_on_stderr(quick_run):
    stdout, _, _, stderr = quick_run
    for step in PROGRESS_STEPS:
        assert f"{step}: 100%|" in stderr, step
    assert "%|" not in stdout  # the tables stay clean
    assert "update cost and peak RSS ..." in stderr  # step messages are still printed, between the bars


def test_from_json_prints_the_saved_run_again(quick_run, capsys):
    stdout, _, path, _ = quick_run
    assert cli_main(["bench", "--from-json", str(path)]) == 0
    reprinted = capsys.readouterr().out
    tables = [line for line in stdout.splitlines() if line.startswith("|")]
    assert tables == [line for line in reprinted.splitlines() if line.startswith("|")]


def test_python_m_benchmarks_entry_point(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["flash_vstream_hf.benchmarks", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("flash_vstream_hf.benchmarks", run_name="__main__")
    assert exit_info.value.code == 0
    assert "--quick" in capsys.readouterr().out


def test_bad_arguments_are_named(capsys):
    with pytest.raises(SystemExit):
        cli_main(["bench", "--threads", "0"])
    assert "--threads" in capsys.readouterr().err


def test_released_baseline_is_the_same_algorithm():
    """The released-algorithm baseline computes what STAR memory computes offline from a fresh memory (same
    k-means initialisation), so the comparison is between two implementations of one algorithm."""
    config = tiny_config()
    layout = StarLayout.from_config(config)
    torch.manual_seed(0)
    attention = FlashVStreamAbstractMemoryAttention(config).eval()
    with torch.no_grad():
        for frames_seen in (1, 3, 7, 40):
            frames = torch.randn(1, frames_seen, layout.spatial_tokens, layout.feature_size)
            star = consolidate(empty_state(layout, 1, "cpu", torch.float32), layout, frames, attention)
            expected = read_out(star, layout, attention)[0]
            released = released_memory(frames[0], layout, attention, torch.Generator().manual_seed(layout.memory_seed))
            assert released.shape == (layout.num_tokens(frames_seen), layout.feature_size)
            torch.testing.assert_close(released, expected, rtol=1e-5, atol=1e-5)


def test_window_and_naive_baselines_respect_their_budgets():
    layout = StarLayout.from_config(tiny_config())
    window = RecentWindow(layout, token_budget=layout.num_tokens(100))
    window.add(torch.randn(1, 20, layout.patch_grid_size**2, layout.feature_size))
    assert window.tokens().shape[0] == window.window * layout.spatial_tokens <= layout.num_tokens(100)
    naive = NaiveContext(layout, context_length=100, text_tokens=4)
    assert naive.max_frames == (100 - 4) // layout.spatial_tokens
    with pytest.raises(ValueError, match="at most"):
        naive.add(torch.randn(1, naive.max_frames + 1, layout.patch_grid_size**2, layout.feature_size))


def _rows(method: str, values: dict[int, float], key: str = "ms_per_frame") -> list[dict]:
    return [{"method": method, "frames_seen": n, key: v} for n, v in values.items()]


def test_targets_are_judged_from_the_measured_rows():
    update = _rows("star", {100: 5.0, 100_000: 5.5}) + _rows("original", {100: 10.0, 1_000: 100.0})
    for row, peak in zip(update[:2], (600.0, 603.0)):
        row["peak_rss_mb"] = peak
    ttft = _rows("star", {64: 1.0, 16_384: 1.2}, "seconds") + _rows("naive", {16: 1.0, 63: 4.0}, "seconds")
    ingest = [
        {"setting": "a", "batch": 1, "memory_threads": 2, "consolidation_share": 0.2, "fps": 0.7},
        {"setting": "b", "batch": 1, "memory_threads": 1, "consolidation_share": 0.01, "fps": 0.8},
        {"setting": "c", "batch": 8, "memory_threads": 1, "consolidation_share": 0.01, "fps": 1.5},
    ]
    results = {"update": {"rows": update}, "ttft": {"rows": ttft, "naive_max_frames": 63}, "ingest": {"rows": ingest}}
    checks = {c["target"]: c for c in evaluate_targets(results)}
    assert checks["update_flat"]["met"] is True and checks["update_flat"]["measured"] == "1.10x"
    assert "10.0x" in checks["update_flat"]["detail"]
    assert checks["rss_flat"]["met"] is None  # no 1,000-frame checkpoint in these rows
    assert checks["ttft_flat"]["met"] is False and "4.0x" in checks["ttft_flat"]["detail"]
    assert checks["consolidation_share"]["met"] is True and "20.0%" in checks["consolidation_share"]["detail"]
    # real time is judged one frame per call; batching shows up only as a comparison
    assert checks["real_time"]["met"] is False and "1.50 frames/s" in checks["real_time"]["detail"]
    assert all(c["met"] is None for c in evaluate_targets(results, evaluate=False))
    update[1]["ms_per_frame"] = 2.5  # twice as fast at 100,000 frames is as far from flat as twice as slow
    assert {c["target"]: c for c in evaluate_targets(results)}["update_flat"]["met"] is False


def test_markdown_table_shape():
    table = markdown_table(["a", "b"], [["x", None], ["y", 2]]).splitlines()
    assert table[1] == "|:---|---:|" and table[2] == "| x | — |"


def test_update_section_on_the_tiny_layout_without_progress_bars(tmp_path, capsys):
    path = tmp_path / "tiny.json"
    with progress_bars(False):
        assert cli_main(["bench", "--quick", "--only", "update", "--memory-layout", "tiny", "--json", str(path)]) == 0
    captured = capsys.readouterr()
    assert "%|" not in captured.err
    results = json.loads(path.read_text())
    assert results["update"]["layout_name"] == "tiny"
    assert results["update"]["layout"]["feature_size"] == tiny_config().vision_config.hidden_size
    assert all(row["ms_per_frame"] is not None for row in results["update"]["rows"] if row["method"] == "star")
    assert "tiny memory layout" in captured.out
