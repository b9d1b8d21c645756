"""The eval job (`flash-vstream eval --ray`): the benchmark's videos spread over a pool of actors that each load
the model once (`QuestionAnswerer`); each actor runs the single-process harness on one video at a time
(`evaluation.runner.video_results`: the same streaming pass, the same records), and the driver appends every
record to the results file as each video finishes. So the results are the ones `flash-vstream eval` gives, the
file is resumable the same way (a rerun skips the ids in it), and a bad video is a reported problem, not the end
of the run. The videos folder must be one every node of the cluster sees.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

from ...evaluation.items import EvalItem, Problem
from ...evaluation.results import ResultsFile
from ...evaluation.runner import RunOutcome, RunSettings, result_id, take_result, video_results
from .pool import ActorPlan, map_rows, plan_actors, ray_cluster


class QuestionAnswerer:
    """A Ray Data actor: the model loaded once, then the records and problems of each row `{video, items}`."""

    def __init__(self, model_options: dict, settings: dict, videos_dir: str | None, threads: int = 1):
        import torch

        from ...commands.common import load_model

        torch.set_num_threads(threads)
        self.model, self.processor = load_model(argparse.Namespace(command="eval", **model_options))
        self.settings = RunSettings(**{**settings, "progress": False})
        self.videos_dir = videos_dir

    def __call__(self, batch: dict) -> dict:
        out = {"video": [], "records": [], "problems": []}
        for video, encoded in zip(batch["video"], batch["items"]):
            items = [decode_item(entry) for entry in json.loads(str(encoded))]
            records, problems = [], []
            try:
                for result in video_results(self.model, self.processor, str(video), items, self.videos_dir,
                                            self.settings):  # fmt: skip
                    (problems if isinstance(result, Problem) else records).append(result)
            except Exception as error:  # noqa: BLE001 (a bug must cost this video's questions, not the whole run)
                answered = {record["id"] for record in records} | {problem.id for problem in problems}
                message = f"the worker failed: {type(error).__name__}: {error}"
                problems += [Problem(item.id, "answer", message, item.video) for item in items
                             if item.id not in answered]  # fmt: skip
            out["video"].append(str(video))
            out["records"].append(json.dumps(records, ensure_ascii=False))
            out["problems"].append(json.dumps([problem.to_dict() for problem in problems], ensure_ascii=False))
        return out


def encode_item(item: EvalItem) -> dict:
    return dataclasses.asdict(item)


def decode_item(entry: dict) -> EvalItem:
    return EvalItem(**{**entry, "options": tuple(entry.get("options") or ())})


def run_benchmark_on_ray(
    model_options: dict,
    items: list[EvalItem],
    videos_dir: str | Path | None,
    results: ResultsFile,
    settings: RunSettings,
    *,
    address: str | None = None,
    actors: int | None = None,
) -> tuple[RunOutcome, ActorPlan | None]:
    """`run_benchmark` on a Ray cluster: every item not yet in `results` answered by an actor pool of the model
    `model_options` names (`model`, `device`, `dtype`, `load_in_4bit`, as `commands.common.load_model` takes
    them), one video per call; each record appended to `results` as its video finishes. Returns the outcome (as
    `run_benchmark`'s) and the actor pool used (None when nothing was left to answer)."""
    from transformers.utils.logging import tqdm

    outcome = RunOutcome(records=results.load())
    by_video: dict[str, list[EvalItem]] = {}
    for item in items:
        if item.id not in outcome.records:
            by_video.setdefault(item.video, []).append(item)
    if not by_video:
        return outcome, None
    rows = [{"video": video, "items": json.dumps([encode_item(item) for item in todo], ensure_ascii=False)}
            for video, todo in by_video.items()]  # fmt: skip
    folder = os.path.abspath(videos_dir if videos_dir is not None else os.getcwd())  # the actors' cwd is not ours
    fields = {field.name for field in dataclasses.fields(RunSettings)}
    constructor = {
        "model_options": model_options,
        "videos_dir": folder,
        "settings": {key: value for key, value in dataclasses.asdict(settings).items() if key in fields},
    }
    done = len(items) - sum(len(todo) for todo in by_video.values())
    overall = tqdm(total=len(items), initial=done, desc="questions", unit="q", disable=not settings.progress)
    try:
        with ray_cluster(address) as resources:
            plan = plan_actors(actors, resources, work=len(rows))
            for row in map_rows(rows, QuestionAnswerer, constructor, plan):
                answers = json.loads(row["records"]) + [Problem(**entry) for entry in json.loads(row["problems"])]
                for result in answers:
                    take_result(outcome, results, result)
                    if result_id(result) is not None:
                        overall.update(1)
    finally:
        overall.close()
    return outcome, plan
