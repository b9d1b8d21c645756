"""`flash-vstream ask SOURCE --model M --at 00:01:30 "question" [--at ...] [--json]`.

Answers each question as of its timestamp: the memory holds exactly the frames stamped up to it. The file is
streamed through once, as fast as possible by default; questions are answered while ingest goes on.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys

from .common import add_model_arguments, add_source_arguments, load_model, stream_options

_TIME = re.compile(r"^(?:(?:(\d+):)?(\d+):)?(\d+(?:\.\d*)?)$")


def parse_time(text: str) -> float:
    """Seconds from `SS[.s]`, `MM:SS[.s]` or `HH:MM:SS[.s]`."""
    match = _TIME.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"timestamp must be SS, MM:SS or HH:MM:SS (e.g. 00:01:30), got {text!r}")
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds)


def format_time(seconds: float | None) -> str:
    if seconds is None:
        return "--"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours:02d}:{minutes:02d}:{secs:04.1f}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser, default_speed=None)
    parser.add_argument(
        "--at", nargs=2, action="append", required=True, metavar=("TIME", "QUESTION"),
        help="ask QUESTION about the stream up to TIME (SS, MM:SS or HH:MM:SS); repeat for more questions",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the answers as JSON")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..streaming import StreamingSession

    try:
        questions = [(parse_time(time), question) for time, question in args.at]
    except argparse.ArgumentTypeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    model, processor = load_model(args)
    session = StreamingSession(model, processor, generation_kwargs={"max_new_tokens": args.max_new_tokens})
    # Registered before the stream starts, so none can be missed; each resolves as ingest passes its time.
    futures = [session.snapshot_at(seconds) for seconds, _ in questions]
    try:
        session.start(args.source, **stream_options(args))
    except (OSError, ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    results = [None] * len(questions)
    failed = False
    order = sorted(range(len(questions)), key=lambda i: questions[i][0])
    with session:
        for index in order:  # earlier questions are answered while ingest goes on toward the later ones
            seconds, question = questions[index]
            try:
                snapshot = futures[index].result()
            except RuntimeError as error:  # the stream failed before this time: answer from what it had
                print(f"note: {error}", file=sys.stderr)
                snapshot = session.snapshot()
            if index == order[-1]:
                session.stop()  # every question has its memory: the rest of the file is not needed
            try:
                answer = session.ask(question, snapshot=snapshot)
                results[index] = {"at": seconds, **answer.to_dict()}
            except Exception as error:  # one failed question does not stop the others
                failed = True
                results[index] = {"at": seconds, "question": question, "error": f"{type(error).__name__}: {error}"}
            if not args.json:
                _print_result(results[index])
        status = session.status()
    if args.json:
        print(json.dumps({"source": args.source, "model": args.model, "fps": args.fps, "answers": results,
                          "status": dataclasses.asdict(status)}, indent=2))  # fmt: skip
    elif status.error:
        print(f"note: the stream ended early: {status.error}", file=sys.stderr)
    return 1 if failed else 0


def _print_result(result: dict) -> None:
    print(f"[{format_time(result['at'])}] Q: {result['question']}")
    if "error" in result:
        print(f"  error: {result['error']}")
        return
    print(f"  A: {result['answer']}")
    print(
        f"  (memory: {result['frames']} frames up to {format_time(result['stream_time'])}, "
        f"{result['memory_tokens']} tokens; answered in {result['latency_s']:.2f} s)"
    )
