"""`flash-vstream ask SOURCE --model M --at 00:01:30 "question" [--at ...] [--json]`.

Answers each question as of its timestamp: the memory holds exactly the frames stamped up to it. The file is
streamed through once, as fast as possible by default; questions are answered while ingest goes on.

A time past the end of the stream is answered from all of it, with a note (`"past_end": true` in `--json`). If
the source fails before a question's time (a decode error mid-file), that question is answered from the frames
read up to the failure, with a note (`"stream_failed": true`), and the exit status is 1, as it is when a
question fails. Times are `SS`, `MM:SS` or `HH:MM:SS`: the leading unit has no bound, the others must be < 60.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from .arguments import NEW_TOKENS, TimedQuestion
from .common import add_model_arguments, add_source_arguments, load_model, stream_options


def format_time(seconds: float | None) -> str:
    if seconds is None:
        return "--"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours:02d}:{minutes:02d}:{secs:04.1f}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser, default_speed=None)
    parser.add_argument(
        "--at", nargs=2, action=TimedQuestion, required=True, metavar=("TIME", "QUESTION"),
        help="ask QUESTION about the stream up to TIME (SS, MM:SS or HH:MM:SS); repeat for more questions",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the answers as JSON")
    parser.add_argument("--max-new-tokens", type=NEW_TOKENS, default=256, help="tokens per answer (default 256)")
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..streaming import StreamingSession

    questions = args.at  # [(seconds, question)], checked while parsing
    model, processor = load_model(args)
    session = StreamingSession(model, processor, generation_kwargs={"max_new_tokens": args.max_new_tokens})
    # Registered before the stream starts, so none can be missed; each resolves as ingest passes its time.
    futures = [session.snapshot_at(seconds) for seconds, _ in questions]
    try:
        session.start(args.source, **stream_options(args))
    except (OSError, ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    with session:
        results = _answer_all(session, questions, futures, print_each=not args.json)
        status = session.status()
    if args.json:
        print(json.dumps({"source": args.source, "model": args.model, "fps": args.fps, "answers": results,
                          "status": dataclasses.asdict(status)}, indent=2))  # fmt: skip
    if status.error:
        print(f"note: the stream ended early at {format_time(status.failed_at)}: {status.error}", file=sys.stderr)
    incomplete = any("error" in result or result["stream_failed"] for result in results)
    return 1 if incomplete else 0


def _answer_all(session, questions: list[tuple[float, str]], futures: list, print_each: bool) -> list[dict]:
    """Answer every question from its snapshot, earliest first, while ingest goes on toward the later ones; the
    results in the order asked."""
    results = [None] * len(questions)
    order = sorted(range(len(questions)), key=lambda i: questions[i][0])
    for index in order:
        seconds, question = questions[index]
        snapshot, note, stream_failed = _snapshot_for(session, futures[index], seconds)
        if index == order[-1]:
            session.stop()  # every question has its memory: the rest of the file is not needed
        try:
            answer = session.ask(question, snapshot=snapshot)
            results[index] = {"at": seconds, **answer.to_dict()}
        except Exception as error:  # one failed question does not stop the others
            results[index] = {"at": seconds, "question": question, "error": f"{type(error).__name__}: {error}"}
        results[index].update(past_end=snapshot.stream_ended, stream_failed=stream_failed, note=note)
        if print_each:
            _print_result(results[index])
    return results


def _snapshot_for(session, future, seconds: float) -> tuple:
    """`(snapshot, note, stream_failed)` for a question at `seconds`: the memory as of that time, else the whole
    stream if it ended first (with a note), else what was read before the source failed (with a note)."""
    from ..streaming import StreamInterruptedError

    try:
        snapshot = future.result()
    except StreamInterruptedError as error:
        reached, cause = format_time(error.stream_time), session.status().error
        note = f"the stream failed at {reached}, before {format_time(seconds)} ({cause}): answered from what it read"
        return session.snapshot(), note, True
    except RuntimeError as error:  # stopped before this time (Ctrl-C): answer from what it had
        return session.snapshot(), str(error), True
    if snapshot.stream_ended:
        ended, asked = format_time(snapshot.stream_time), format_time(seconds)
        return snapshot, f"the stream ended at {ended}, before {asked}: answered from all of it", False
    return snapshot, None, False


def _print_result(result: dict) -> None:
    print(f"[{format_time(result['at'])}] Q: {result['question']}")
    if result["note"]:
        print(f"  note: {result['note']}")
    if "error" in result:
        print(f"  error: {result['error']}")
        return
    print(f"  A: {result['answer']}")
    print(
        f"  (memory: {result['frames']} frames up to {format_time(result['stream_time'])}, "
        f"{result['memory_tokens']} tokens; answered in {result['latency_s']:.2f} s)"
    )
