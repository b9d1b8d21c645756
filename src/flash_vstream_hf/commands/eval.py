"""`flash-vstream eval ANNOTATIONS --format F --videos DIR --output DIR --model M [--judge-url URL ...]`.

Runs a model over a benchmark in streaming mode (see `flash_vstream_hf.evaluation.runner`): one pass per video,
each question asked when the stream reaches its timestamp. Writes into `--output`:

- `predictions.jsonl`: one line per question (id, video, question, reference, prediction, timestamp, frames
  seen, time to first token, latency, and its scores), appended as answered; a rerun skips the ids in it;
- `judgements.jsonl`: the judge's verdict per open-ended answer (from `judge_cache/`, so a rerun sends nothing);
- `summary.json`: the table per question type and overall (also printed), the problems, the settings;
- `run.json`: the settings the predictions were made with; a rerun with other settings is refused.

With `--ray [--address ADDR --actors N]` the videos are spread over a Ray cluster (a local one by default), a pool
of actors each loading the model once (`flash_vstream_hf.cluster.batch.evaluation`); the records are the same,
written by this process into the same files, and a rerun skips the same ids.

Exit status: 0 when every question was answered (and judged, with a judge); 1 when anything was skipped or left
unjudged (each reported on stderr with its id); 2 for unusable arguments or annotations.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .arguments import FPS, NEW_TOKENS, NON_NEGATIVE, POSITIVE, SECONDS, real, text
from .common import LOAD_FAILED, TINY, ModelLoadError, add_model_arguments, check_model_folder, load_model

FORMATS = ("rvs", "vs", "streamingbench", "ovo-bench")
SETTINGS_KEYS = ("annotations", "format", "clips", "model", "dtype", "load_in_4bit", "fps", "frame_rate",
                 "max_new_tokens", "max_batch")  # fmt: skip
USAGE_ERROR = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("annotations", type=text("annotation file"), help="the benchmark's annotation file (JSON or JSON Lines)")
    parser.add_argument(
        "--format", required=True, choices=FORMATS,
        help="rvs: VStream-QA real time (RVS-Ego/RVS-Movie, asked at end_time; also the synthetic benchmark); "
        "vs: VStream-QA offline (VS-Ego/VS-Movie, asked after the whole video); streamingbench; ovo-bench",
    )  # fmt: skip
    parser.add_argument("--videos", help="folder of the videos (files or frame folders; default: the current one)")
    parser.add_argument("--output", required=True, type=text("output folder"), help="folder for predictions, verdicts and the summary")
    parser.add_argument("--clips", help="VStream-QA clip file (rvs_ego.json, ...): question times are shifted by "
                        "their clip's start (for times given in the source video's timeline)")  # fmt: skip
    group = parser.add_argument_group("streaming")
    group.add_argument("--fps", type=FPS, default=1.0, help="frames sampled per second of video (default 1)")
    group.add_argument("--frame-rate", type=FPS, default=1.0, help="frames per second of frame folders (default 1)")
    group.add_argument(
        "--backend", choices=("decord", "pyav"), help="video file decoder (default: the first installed)"
    )
    group.add_argument("--max-new-tokens", type=NEW_TOKENS, default=64, help="tokens per answer (default 64)")
    group.add_argument(
        "--max-batch",
        type=POSITIVE,
        default=1,
        help="frames per vision-tower call (default 1: answers independent of machine speed)",
    )
    group.add_argument(
        "--past-end-tolerance",
        type=real(0.0),
        default=1.0,
        help="seconds after the last frame a question may still be asked (default 1)",
    )
    group.add_argument("--no-likelihood", action="store_true", help="multiple choice by the generated letter only")
    group.add_argument("--limit", type=POSITIVE, help="only the first N questions (a quick check)")
    group.add_argument("--no-progress", action="store_true", help="no progress bars")
    judge = parser.add_argument_group("judge (open-ended answers)")
    endpoint = judge.add_mutually_exclusive_group()  # an endpoint or a local model, not both
    endpoint.add_argument("--judge-url", help="OpenAI-compatible endpoint, e.g. https://api.openai.com/v1 "
                       "(or $FLASH_VSTREAM_JUDGE_URL, $OPENAI_BASE_URL)")  # fmt: skip
    judge.add_argument("--judge-model", help="model name at the endpoint (or $FLASH_VSTREAM_JUDGE_MODEL; default "
                       "gpt-3.5-turbo, the original's)")  # fmt: skip
    judge.add_argument("--judge-key", help="API key (or $FLASH_VSTREAM_JUDGE_KEY, $OPENAI_API_KEY)")
    endpoint.add_argument("--judge-local", help="a local transformers chat model (folder or Hub id) as the judge")
    judge.add_argument("--judge-timeout", type=SECONDS, default=60.0, help="seconds per judge request (default 60)")
    judge.add_argument("--judge-retries", type=NON_NEGATIVE, default=2, help="retries per item (default 2)")
    judge.add_argument("--judge-cache", help="judge answer cache folder (default: OUTPUT/judge_cache)")
    cluster = parser.add_argument_group("cluster (Ray)")
    cluster.add_argument("--ray", action="store_true", help="answer on a Ray cluster: the videos spread over a pool "
                         "of actors that each load the model once (same records as without --ray)")  # fmt: skip
    cluster.add_argument("--address", type=text("Ray address"),
                         help="with --ray: join this cluster (default: start a local one)")  # fmt: skip
    cluster.add_argument("--actors", type=POSITIVE,
                         help="with --ray: model actors (default: one per GPU of the cluster, else one per 2 CPUs)")  # fmt: skip
    add_model_arguments(parser)


def check_arguments(args: argparse.Namespace) -> None:
    for name in ("address", "actors"):
        if getattr(args, name) is not None and not args.ray:
            raise ValueError(f"--{name} is for --ray: add --ray, or leave --{name} out")


def run(args: argparse.Namespace) -> int:
    from ..evaluation.annotations import AnnotationError

    output = Path(args.output)
    try:
        loaded = load_items(args)
    except AnnotationError as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE_ERROR
    items = loaded.items[: args.limit] if args.limit else loaded.items
    for problem in loaded.problems:
        print(f"skipped {problem.line()}", file=sys.stderr)
    if loaded.excluded:
        print(f"note: {len(loaded.excluded)} entries are not multiple choice and are left out "
              f"(e.g. {loaded.excluded[0]})", file=sys.stderr)  # fmt: skip
    mismatch = check_settings(output, settings_of(args))
    if mismatch:
        print(f"error: {output} holds predictions made with other settings ({mismatch}); "
              "use another --output, or delete it to start over", file=sys.stderr)  # fmt: skip
        return USAGE_ERROR
    if args.ray:  # the actors load the model; a folder that cannot load would fail every one of them
        if args.model != TINY and os.path.exists(args.model):
            try:
                check_model_folder(args.model)
            except ModelLoadError as error:
                print(f"flash-vstream eval: error: {error}", file=sys.stderr)
                return LOAD_FAILED
        return evaluate(args, items, loaded, None, None)
    model, processor = load_model(args)
    return evaluate(args, items, loaded, model, processor)


def load_items(args: argparse.Namespace):
    from ..evaluation.multiple_choice import load_ovo_bench, load_streamingbench
    from ..evaluation.vstream_qa import load_vstream_qa

    if args.format in ("rvs", "vs"):
        return load_vstream_qa(args.annotations, realtime=args.format == "rvs", clips=args.clips)
    if args.clips:
        raise SystemExit(f"error: --clips is for VStream-QA (--format rvs or vs), not {args.format}")
    return (
        load_streamingbench(args.annotations) if args.format == "streamingbench" else load_ovo_bench(args.annotations)
    )


def settings_of(args: argparse.Namespace) -> dict:
    values = {key: getattr(args, key, None) for key in SETTINGS_KEYS}
    values["annotations"] = os.path.abspath(args.annotations)
    values["clips"] = os.path.abspath(args.clips) if args.clips else None
    return values


def check_settings(output: Path, settings: dict) -> str | None:
    """Record the settings in `output/run.json`, or name the ones that differ from those recorded."""
    from ..evaluation.run_settings import check_recorded_settings

    return check_recorded_settings(output / "run.json", settings, SETTINGS_KEYS)


def make_judge(args: argparse.Namespace):
    """The judge the arguments and environment name, or None."""
    from ..evaluation.judge_prompt import ORIGINAL_MODEL
    from ..evaluation.judges import KEY_ENV, MODEL_ENV, URL_ENV, OpenAICompatibleJudge, TransformersJudge
    from ..evaluation.judges import from_environment as env

    if args.judge_local:
        return TransformersJudge.from_pretrained(args.judge_local, device=args.device)
    url = args.judge_url or env(URL_ENV)
    if not url:
        return None
    model = args.judge_model or env(MODEL_ENV) or ORIGINAL_MODEL
    return OpenAICompatibleJudge(url, model, args.judge_key or env(KEY_ENV), timeout=args.judge_timeout)


def evaluate(args, items, loaded, model, processor) -> int:
    """The streaming pass, the judge pass and the summary; the exit status."""
    from ..evaluation import RunSettings, run_benchmark
    from ..evaluation.judge_cache import JudgeCache
    from ..evaluation.judging import judge_records
    from ..evaluation.results import ResultsFile
    from ..evaluation.summary import format_table, summarise

    output = Path(args.output)
    settings = RunSettings(
        fps=args.fps, frame_rate=args.frame_rate, max_new_tokens=args.max_new_tokens,
        past_end_tolerance=args.past_end_tolerance, max_batch=args.max_batch, backend=args.backend,
        likelihood=not args.no_likelihood, progress=not args.no_progress,
    )  # fmt: skip
    results = ResultsFile(output / "predictions.jsonl")
    if getattr(args, "ray", False):
        outcome = _run_on_ray(args, items, results, settings)
        if outcome is None:
            return USAGE_ERROR
    else:
        outcome = run_benchmark(model, processor, items, args.videos, results, settings)
    problems = list(loaded.problems) + outcome.problems
    wanted = {item.id for item in items}
    records = {key: value for key, value in outcome.records.items() if key in wanted}
    judge, verdicts = make_judge(args), {}
    open_records = [record for record in records.values() if record.get("kind") == "open"]
    if judge is not None and open_records:
        cache = JudgeCache(args.judge_cache or output / "judge_cache")
        verdicts, judge_problems = judge_records(
            open_records, judge, cache, retries=args.judge_retries, progress=not args.no_progress
        )
        problems += judge_problems
        write_judgements(output / "judgements.jsonl", verdicts, judge)
    summary = summarise(items, records, verdicts)
    notes = []
    if open_records and judge is None:
        notes.append("open-ended answers are not judged: give --judge-url or --judge-local")
    summary.update(
        benchmark={"annotations": os.path.abspath(args.annotations), "format": args.format},
        model=args.model,
        judge=None if judge is None else {**judge.identity, "describe": judge.describe()},
        written_this_run=outcome.written,
        problems=[problem.to_dict() for problem in problems],
        excluded=loaded.excluded,
        notes=notes,
    )
    (output / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(format_table(summary))
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s), listed above and in {output / 'summary.json'}", file=sys.stderr)
        return 1
    return 0


def _run_on_ray(args, items, results, settings):
    """The streaming pass on a Ray cluster (`flash_vstream_hf.cluster.batch.evaluation`); None (said on stderr)
    when the cluster cannot hold the actors asked for, or Ray is not installed."""
    from ..cluster.batch.evaluation import run_benchmark_on_ray
    from ..cluster.batch.pool import RayMissingError

    model = args.model if args.model == TINY or not os.path.exists(args.model) else os.path.abspath(args.model)
    options = {"model": model, "device": args.device, "dtype": args.dtype, "load_in_4bit": args.load_in_4bit}
    try:
        outcome, plan = run_benchmark_on_ray(options, items, args.videos, results, settings, address=args.address,
                                             actors=args.actors)  # fmt: skip
    except (ValueError, RayMissingError) as error:  # an actor pool the cluster cannot hold; no Ray
        print(f"error: {error}", file=sys.stderr)
        return None
    if plan is not None:
        print(f"ray: {plan.describe()}", file=sys.stderr)
    return outcome


def write_judgements(path: Path, verdicts: dict[str, dict], judge) -> None:
    lines = [json.dumps({"id": key, "judge": judge.identity, **value}, ensure_ascii=False) for key, value in
             verdicts.items()]  # fmt: skip
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
