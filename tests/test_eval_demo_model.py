"""The trained demo model through `flash-vstream eval` on the exported synthetic benchmark scores what its own
evaluation (`flash-vstream demo --eval`, `synthetic.evaluation.evaluate`) scores on the same streams: the same
questions at the same frames, the same answer to each, the same accuracy per family.

Two paths, one model: the export writes frames as PNG folders that the harness decodes, CLIP-preprocesses with
the checkpoint's processor and streams into a fresh memory one frame per vision call, answering each question by
`generate()` and exact match; the demo's evaluation draws the frames in memory, normalises them in numpy, and
takes the argmax of the next-token logits.

Each stream is evaluated on its own (`streams=1`) on the demo side, as the harness plays each video into a memory
of its own: a STAR memory of `B` streams draws the k-means initial centroids of all `B` from one generator
(`star_memory.weighted_kmeans`), so a stream's temporal memory, and now and then a long-range answer, depends on
which streams are played beside it (at 8 streams x 500 frames, 1 answer in 164 differs).
"""

import json
from collections import Counter, defaultdict

import pytest

from flash_vstream_hf.cli import main
from flash_vstream_hf.synthetic import FAMILIES
from flash_vstream_hf.synthetic import evaluation as demo_evaluation
from flash_vstream_hf.synthetic.checkpoint import demo_model, demo_model_path

from .eval_helpers import read_predictions

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STREAMS, LENGTH, PER_FAMILY = 3, 100, 2


def demo_answers(monkeypatch, seeds, length, per_family):
    """The demo evaluation's answers `{(seed, frame, question): Counter((answer, word, right))}` and right /
    asked per family, each stream evaluated alone."""
    model, processor = demo_model()
    answered = defaultdict(Counter)
    original = demo_evaluation.answer_rows
    correct, total = Counter(), Counter()
    for seed in seeds:

        def recording(*args, seed=seed):
            for row in original(*args):
                _, _, question, word = row
                answered[seed, question.time, question.text][question.answer, word, word == question.answer] += 1
                yield row

        monkeypatch.setattr(demo_evaluation, "answer_rows", recording)
        scores = demo_evaluation.evaluate(
            model, processor, lengths=(length,), layouts=("star",), streams=1, per_family=per_family,
            first_seed=seed, progress=False,
        )  # fmt: skip
        for family in FAMILIES:
            correct[family] += scores.correct["star", length, family]
            total[family] += scores.total["star", length, family]
    return answered, correct, total


def test_eval_scores_the_demo_model_as_its_own_evaluation_does(tmp_path, monkeypatch, capsys):
    bench, out = tmp_path / "bench", tmp_path / "out"
    export = ["export-synthetic", str(bench), "--streams", str(STREAMS), "--length", str(LENGTH),
              "--per-family", str(PER_FAMILY)]  # fmt: skip
    assert main(export) == 0
    argv = ["eval", str(bench / "test_qa.json"), "--format", "rvs", "--videos", str(bench / "videos"),
            "--output", str(out), "--model", str(demo_model_path()), "--device", "cpu", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()

    harness = defaultdict(Counter)
    for record in read_predictions(out / "predictions.jsonl").values():
        seed = int(record["video"].removeprefix("synthetic_"))
        key = (seed, int(record["timestamp"]), record["question"])
        harness[key][record["reference"], record["prediction"], record["exact_match"]] += 1
        assert record["frames_seen"] == record["timestamp"] + 1
    demo, correct, total = demo_answers(monkeypatch, range(STREAMS), LENGTH, PER_FAMILY)

    assert sum(total.values()) >= 30 and set(total) == set(FAMILIES)
    assert sorted(harness) == sorted(demo)  # the same questions at the same frames
    assert harness == demo  # the same answer to each
    rows = json.loads((out / "summary.json").read_text())["rows"]
    for family in FAMILIES:
        assert rows[family]["questions"] == rows[family]["answered"] == total[family]
        assert rows[family]["exact_match"] == pytest.approx(correct[family] / total[family], abs=1e-12)
    # the model is trained: well above chance on what is on screen
    assert correct["now"] / total["now"] > 0.6
