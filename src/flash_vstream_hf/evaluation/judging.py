"""The judge pass over the open-ended records of a run: each verdict from the cache or the judge, a problem for
each record left without one. After `MAX_CONSECUTIVE_FAILURES` items in a row fail, the judge counts as down
and the remaining items are reported unjudged at once (a rerun asks for them), instead of each waiting out its
retries."""

from __future__ import annotations

from transformers.utils import logging

from .items import Problem
from .judge_cache import JudgeCache
from .judges import JudgeError, judge_answer

logger = logging.get_logger(__name__)

MAX_CONSECUTIVE_FAILURES = 5


def judge_records(
    records: list[dict], judge, cache: JudgeCache, retries: int = 2, pause: float = 1.0, progress: bool = True
) -> tuple[dict[str, dict], list[Problem]]:
    """`({id: verdict dict}, problems)` for the records of kind "open"."""
    from transformers.utils.logging import tqdm

    verdicts, problems, failures_in_a_row = {}, [], 0
    todo = [record for record in records if record.get("kind") == "open"]
    for record in tqdm(todo, desc="judge", unit="q", disable=not progress or not todo):
        if failures_in_a_row >= MAX_CONSECUTIVE_FAILURES:
            problems.append(Problem(record["id"], "judge", "not judged: the judge failed on the previous items"))
            continue
        try:
            outcome = judge_answer(
                judge, cache, record["question"], record["reference"], record["prediction"], retries, pause
            )
        except JudgeError as error:
            failures_in_a_row += 1
            problems.append(Problem(record["id"], "judge", str(error), record.get("video")))
            logger.warning("judge: %s: %s", record["id"], error)
            continue
        failures_in_a_row = 0
        verdicts[record["id"]] = {**outcome.verdict.to_dict(), "cached": outcome.cached, "cache_key": outcome.key}
    return verdicts, problems
