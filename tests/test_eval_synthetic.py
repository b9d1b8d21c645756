"""The synthetic benchmark exported in the VStream-QA (RVS) format and evaluated like any other benchmark."""

import argparse
import json

import numpy as np
import pytest

from flash_vstream_hf.commands import export_synthetic
from flash_vstream_hf.evaluation.synthetic_export import (
    ExportQuestion,
    ExportStream,
    export_vstream_qa,
    synthetic_streams,
)
from flash_vstream_hf.evaluation.vstream_qa import load_vstream_qa

from .eval_helpers import read_predictions, run_eval

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_exporter_writes_vstream_qa_with_frame_folders(tmp_path):
    frames = [np.full((8, 8, 3), 10 * t, dtype=np.uint8) for t in range(5)]
    questions = [
        ExportQuestion("q1", "is it dark", "yes", 3.0, "now", "yes_no"),
        ExportQuestion("q2", "what", "red", 0, "x"),
    ]
    path = export_vstream_qa([ExportStream("s0", 5, frames.__getitem__, questions)], tmp_path)
    loaded = load_vstream_qa(path, realtime=True, clips=tmp_path / "clips.json")
    assert not loaded.problems
    assert [(i.id, i.video, i.timestamp, i.kind, i.type) for i in loaded.items] == [
        ("q1", "s0", 3.0, "yes_no", "now"), ("q2", "s0", 0.0, "short", "x")
    ]  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "videos" / "s0").iterdir()) == [f"{t:06d}.png" for t in range(5)]
    with pytest.raises(ValueError, match="outside its video"):
        export_vstream_qa([ExportStream("s1", 2, frames.__getitem__, [questions[0]])], tmp_path / "bad")


def test_the_synthetic_benchmark_runs_through_eval(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    export_synthetic.add_arguments(parser)
    args = parser.parse_args([str(tmp_path / "bench"), "--streams", "2", "--length", "24", "--per-family", "1"])
    assert export_synthetic.run(args) == 0
    assert "flash-vstream eval" in capsys.readouterr().out
    annotations = json.loads((tmp_path / "bench" / "test_qa.json").read_text())
    streams = synthetic_streams(2, 24, 1)
    assert len(annotations) == sum(len(stream.questions) for stream in streams) >= 8
    assert {entry["answer_type"] for entry in annotations} <= {"now", "recent", "long-range"}
    argv = [str(tmp_path / "bench" / "test_qa.json"), "--format", "rvs", "--videos", str(tmp_path / "bench" / "videos"),
            "--output", str(tmp_path / "out"), "--model", "tiny", "--max-new-tokens", "3", "--no-progress"]  # fmt: skip
    assert run_eval(argv) == 0
    records = read_predictions(tmp_path / "out" / "predictions.jsonl")
    assert len(records) == len(annotations)
    for entry in annotations:  # a question at frame t sees frames 0..t
        record = records[entry["id"]]
        assert record["frames_seen"] == entry["end_time"] + 1 and record["stream_time"] == entry["end_time"]
        assert isinstance(record["exact_match"], bool)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["rows"]["overall"]["exact_match"] is not None and summary["notes"] == []


def test_the_demo_models_architecture_and_word_tokenizer_run_through_the_harness(tmp_path):
    """The trained demo model is not shipped yet: its architecture and processor, with random weights, must run
    through the harness (exact match on words, likelihood of word options)."""
    spec = pytest.importorskip("flash_vstream_hf.synthetic.spec")
    import torch

    from flash_vstream_hf.evaluation import RunSettings, run_benchmark
    from flash_vstream_hf.evaluation.items import EvalItem
    from flash_vstream_hf.evaluation.results import ResultsFile
    from flash_vstream_hf.modeling import FlashVStreamForConditionalGeneration

    config = spec.demo_config()
    torch.manual_seed(0)
    model, processor = FlashVStreamForConditionalGeneration(config).eval(), spec.demo_processor(config)
    path = export_vstream_qa(synthetic_streams(1, 20, 1), tmp_path / "bench")
    items = load_vstream_qa(path, realtime=True).items
    first = items[0]
    items.append(EvalItem("mc", first.video, first.question, "B", "choice", "choice", 6.0, ("red", "blue", "green")))
    settings = RunSettings(max_new_tokens=2, progress=False)
    outcome = run_benchmark(
        model, processor, items, tmp_path / "bench" / "videos", ResultsFile(tmp_path / "p"), settings
    )
    assert not outcome.problems and len(outcome.records) == len(items)
    assert len(outcome.records["mc"]["option_logprobs"]) == 3 and outcome.records["mc"]["frames_seen"] == 7
