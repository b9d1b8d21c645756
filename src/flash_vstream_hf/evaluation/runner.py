"""The streaming pass: each video is played once into a fresh STAR memory (frames in order, as fast as they
can be ingested), and each question is answered when the stream reaches its timestamp, from the memory as it is
then, holding exactly the frames stamped up to that time (`StreamingSession.snapshot_at`), while ingest goes on
toward the next question. A question without a timestamp (VS-Ego, VS-Movie) is answered after the whole video.

Frames enter the memory one vision call at a time by default (`max_batch=1`): the streaming runtime batches the
frames that queue up while it is behind, and a differently batched vision tower differs in the last bits, so an
answer could depend on how fast the machine was. With one frame per call a rerun gives the same answers.

Every record is written as soon as it exists (`results.py`); a rerun skips the ids already written and streams
only the videos with questions left (from their start: the memory must see every frame before a question).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from transformers.utils import logging

from ..streaming import NoFramesError, StreamingSession, StreamInterruptedError
from ..streaming.sources import FrameSource
from .choices import choice_prompt, parse_letter
from .items import EvalItem, Problem
from .likelihood import option_logprobs
from .matching import exact_match
from .multiple_choice import LETTERS
from .results import ResultsFile
from .videos import VideoNotFoundError, find_video, open_video

logger = logging.get_logger(__name__)


@dataclass
class RunSettings:
    """How questions are asked.

    `fps`: frames sampled per second of video; `frame_rate`: frames per second of a frame folder (VStream-QA's are
    1); `past_end_tolerance`: a question asked this many seconds or less after the last frame is answered from the
    whole video (a 1 fps clip of 840 s has its last frame at 839 s, and RVS asks at 840 s), one asked later is
    reported and skipped; `max_batch`: frames per vision-tower call (see the module docstring).
    """

    fps: float = 1.0
    frame_rate: float = 1.0
    max_new_tokens: int = 64
    past_end_tolerance: float = 1.0
    max_batch: int = 1
    backend: str | None = None
    likelihood: bool = True
    progress: bool = True


@dataclass
class RunOutcome:
    """Records of every question answered (this run's and earlier runs'), and the problems of this run."""

    records: dict[str, dict] = field(default_factory=dict)
    written: int = 0
    problems: list[Problem] = field(default_factory=list)


def run_benchmark(
    model,
    processor,
    items: list[EvalItem],
    videos_dir: str | Path | None,
    results: ResultsFile,
    settings: RunSettings,
) -> RunOutcome:
    """Answer every item not yet in `results`, one streaming pass per video, appending a record per answer."""
    from transformers.utils.logging import tqdm

    outcome = RunOutcome(records=results.load())
    known = {item.id for item in items}
    by_video: dict[str, list[EvalItem]] = {}
    for item in items:
        by_video.setdefault(item.video, []).append(item)
    done = sum(1 for item_id in outcome.records if item_id in known)
    overall = tqdm(total=len(items), initial=done, desc="questions", unit="q", disable=not settings.progress)
    try:
        for video, video_items in by_video.items():
            todo = [item for item in video_items if item.id not in outcome.records]
            if todo:
                _run_video(model, processor, video, todo, videos_dir, results, settings, outcome, overall)
    finally:
        overall.close()
    return outcome


def _run_video(model, processor, video, todo, videos_dir, results, settings, outcome, overall) -> None:
    from transformers.utils.logging import tqdm

    bar = tqdm(total=len(todo), desc=Path(video).name[:32], unit="q", leave=False, disable=not settings.progress)
    try:
        for result in video_results(model, processor, video, todo, videos_dir, settings):
            take_result(outcome, results, result)
            if result_id(result) is not None:
                bar.update(1)
                overall.update(1)
    finally:
        bar.close()


def video_results(
    model, processor, video: str, items: list[EvalItem], videos_dir: str | Path | None, settings: RunSettings
) -> Iterator[dict | Problem]:
    """The records and problems of one video's `items` (`evaluate_video`), or a "video" problem per item when the
    video cannot be found or opened. What one worker does with one video, in this process or on a cluster
    (`flash_vstream_hf.cluster.batch`)."""
    try:
        source = open_video(find_video(video, videos_dir), settings.fps, settings.frame_rate, settings.backend)
    except (VideoNotFoundError, ValueError, OSError) as error:
        for item in items:
            yield Problem(item.id, "video", str(error), video)
        return
    yield from evaluate_video(model, processor, source, items, settings)


def take_result(outcome: RunOutcome, results: ResultsFile, result: dict | Problem) -> None:
    """Append a record to `results` (on disk before the next one) and to `outcome`, or report a problem."""
    if isinstance(result, Problem):
        _report(outcome, result)
    else:
        results.append(result)
        outcome.records[result["id"]] = result
        outcome.written += 1


def result_id(result) -> str | None:
    return result.id if isinstance(result, Problem) else result["id"]


def _report(outcome: RunOutcome, problem: Problem) -> None:
    logger.warning("skipped %s", problem.line())
    outcome.problems.append(problem)


def evaluate_video(
    model, processor, source: FrameSource, items: list[EvalItem], settings: RunSettings
) -> Iterator[dict | Problem]:
    """Stream `source` once and yield a record (or a `Problem`) per item as soon as it is answered, in the order
    the stream reaches them; then a `Problem` for the video if some of its frames could not be read."""
    timed = sorted((item for item in items if item.timestamp is not None), key=lambda item: item.timestamp)
    at_end = [item for item in items if item.timestamp is None]
    session = StreamingSession(
        model,
        processor,
        backlog="block",
        max_batch=settings.max_batch,
        generation_kwargs={"max_new_tokens": settings.max_new_tokens, "do_sample": False},
    )
    # Registered before the stream starts, so none can be missed.
    futures = [session.snapshot_at(item.timestamp) for item in timed]
    try:
        session.start(source, speed=None)
    except Exception as error:  # a missing, corrupt or frameless video: its questions cannot be asked
        for item in items:
            yield Problem(item.id, "video", f"cannot open {source.describe()}: {error}", item.video)
        return
    with session:
        for index, (item, future) in enumerate(zip(timed, futures)):
            snapshot, problem, note = _snapshot_for(session, future, item, settings)
            if index == len(timed) - 1 and not at_end:
                session.stop()  # every question has its memory: the rest of the video is not needed
            yield problem or _answer(session, model, processor, item, snapshot, note, settings)
        if at_end:
            session.wait()
            error = session.status().error
            for item in at_end:
                if error:
                    yield Problem(item.id, "stream", f"the video failed before its end ({error})", item.video)
                else:
                    yield _answer(session, model, processor, item, session.snapshot(), None, settings)
        failed = session.status().frames_failed
    if failed:
        yield Problem(None, "frames", f"{failed} unreadable frame(s) skipped; answers saw the others", items[0].video)


def _snapshot_for(session, future, item: EvalItem, settings: RunSettings):
    """`(snapshot, problem, note)` for an item: the memory as of its timestamp, or why there is none."""
    try:
        snapshot = future.result()
    except StreamInterruptedError as error:
        cause = session.status().error
        return None, Problem(item.id, "stream", f"{error} ({cause})" if cause else str(error), item.video), None
    except RuntimeError as error:
        return None, Problem(item.id, "stream", str(error), item.video), None
    if snapshot.stream_ended:
        last = snapshot.stream_time
        if last is None or item.timestamp - last > settings.past_end_tolerance + 1e-6:
            where = "the video has no frame" if last is None else f"its last frame is at {last:.1f} s"
            message = f"asked at {item.timestamp:.1f} s, past the end of the video ({where})"
            return None, Problem(item.id, "timestamp", message, item.video), None
        return snapshot, None, f"asked at {item.timestamp:.1f} s, after the last frame ({last:.1f} s)"
    return snapshot, None, None


def _answer(session, model, processor, item: EvalItem, snapshot, note: str | None, settings) -> dict | Problem:
    prompt = choice_prompt(item.question, item.options) if item.kind == "choice" else item.question
    try:
        answer = session.ask(prompt, snapshot=snapshot)
    except NoFramesError:
        return Problem(item.id, "timestamp", f"asked at {item.timestamp} s, before the first frame", item.video)
    except Exception as error:  # one failed question does not stop the others
        return Problem(item.id, "answer", f"{type(error).__name__}: {error}", item.video)
    record = {
        "id": item.id,
        "video": item.video,
        "type": item.type,
        "kind": item.kind,
        "question": item.question,
        "reference": item.reference,
        "prediction": answer.text,
        "timestamp": item.timestamp,
        "stream_time": answer.stream_time,
        "frames_seen": answer.frames,
        "memory_tokens": answer.memory_tokens,
        "new_tokens": answer.new_tokens,
        "time_to_first_token_s": answer.time_to_first_token,
        "latency_s": answer.latency,
        "frames_failed": session.status().frames_failed,
    }
    if note:
        record["note"] = note
    if item.kind == "choice":
        record.update(_choice_scores(model, processor, item, snapshot, answer.text, settings))
    else:
        record["exact_match"] = exact_match(answer.text, item.reference, item.kind)
    return record


def _choice_scores(model, processor, item: EvalItem, snapshot, text: str, settings: RunSettings) -> dict:
    letter = parse_letter(text, item.options)
    scores = {"options": list(item.options), "generated_letter": letter, "correct_generated": letter == item.reference}
    if settings.likelihood:
        began = time.perf_counter()
        logprobs = option_logprobs(model, processor, item.question, item.options, snapshot)
        best = max(logprobs)
        winners = [i for i, value in enumerate(logprobs) if value == best]
        # an exact tie has no answer: taking the first would favour "A"
        chosen = LETTERS[winners[0]] if len(winners) == 1 else None
        scores.update(
            option_logprobs=logprobs,
            likelihood_letter=chosen,
            correct_likelihood=chosen == item.reference,
            likelihood_s=time.perf_counter() - began,
        )
    return scores
