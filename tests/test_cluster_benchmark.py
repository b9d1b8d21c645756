"""The cluster benchmark's own logic (benchmarks/cluster.py), without Ray: the capacity search and the
checkpoint-bytes figures. Its Ray measurements run what tests/test_cluster_*.py test."""

from __future__ import annotations

from flash_vstream_hf.benchmarks import cluster as bench
from flash_vstream_hf.benchmarks.common import released_layout
from flash_vstream_hf.modeling.star_memory import empty_state


def host_that_sustains(limit: int):
    tried = []

    def trial(streams: int) -> dict:
        tried.append(streams)
        return {"streams": streams, "sustained": streams <= limit}

    return trial, tried


def test_capacity_search_doubles_to_the_first_failure_then_bisects_once():
    trial, tried = host_that_sustains(40)
    result = bench.search_capacity(trial, 8, 512, lambda _: None)
    assert tried == [8, 16, 32, 64, 48]
    assert result["sustained"] == 32 and not result["limited_by_trials"]


def test_capacity_search_says_when_the_largest_count_tried_was_sustained():
    trial, tried = host_that_sustains(1000)
    result = bench.search_capacity(trial, 8, 40, lambda _: None)
    assert tried == [8, 16, 32]
    assert result["sustained"] == 32 and result["limited_by_trials"]
    trial, tried = host_that_sustains(3)
    assert bench.search_capacity(trial, 4, 64, lambda _: None)["sustained"] == 0 and tried == [4]


def test_checkpoint_bytes_are_fixed_by_the_layout_and_the_7b_figure_is_its_shapes():
    rows = {row["model"].split()[0]: row for row in bench.measure_checkpoint_bytes()}
    for name in ("tiny", "demo"):  # a memory file does not grow with the stream
        assert rows[name]["bytes"] == rows[name]["empty_bytes"] and rows[name]["frames"] > 0
    _, layout = released_layout("released")
    import torch

    tensors = empty_state(layout, 1, "cpu", torch.float16).nbytes
    header = rows["released"]["empty_bytes"] - tensors
    assert 0 < header < 16_384  # the tensors, plus a safetensors header
    assert rows["released"]["memory_tokens"] == 681
    assert 100 < rows["tiny"]["checkpoint_json"] < 400
