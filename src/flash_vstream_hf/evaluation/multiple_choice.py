"""The multiple-choice streaming formats of StreamingBench and OVO-Bench.

**StreamingBench** (`github.com/THUNLP-MT/StreamingBench`, `src/data/questions_*.json`; videos from its Hub
dataset): a JSON list of video entries, each with its questions, asked at `time_stamp`:

    {"video_path": "./videos/sample_2.mp4", "video_categories": "...",
     "questions": [{"task_type": "...", "question": "...", "time_stamp": "00:03:10",
                    "options": ["A. ...", "B. ...", "C. ...", "D. ..."], "answer": "B"}]}

Ids are `<video file stem>_<entry index>_<question index>` (the format has none).

**OVO-Bench** (`github.com/JoeLeelyf/OVO-Bench`, `data/ovo_bench_new.json`; videos from its Hub dataset): a JSON
list of questions, asked at `realtime` seconds, the answer given as the index of the right option:

    {"id": 12, "task": "EPM", "video": "...mp4", "question": "...", "options": ["...", "..."], "gt": 2,
     "realtime": 85.0}

Its backward-tracing and real-time tasks are multiple choice; the forward active-responding ones (REC, SSR, CRR,
entries with `test_info`) ask the model to respond on its own several times and are left out (listed as
excluded, not as errors).

Option letters written into option texts (`"A. ..."`, `"(B) ..."`) are removed: the letter is the position.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

from .annotations import EntryError, entry_problem, parse_time, read_entries, text_field, unique_ids
from .items import EvalItem, LoadResult

LETTERS = string.ascii_uppercase
_LETTER_PREFIX = re.compile(r"^\s*\(?([A-Za-z])\s*[.):]\s*")
FORWARD_TASKS = ("REC", "SSR", "CRR")


def option_text(option: str, index: int) -> str:
    """The text of an option without a leading letter of its own position (`"B. a dog"` -> `"a dog"`)."""
    match = _LETTER_PREFIX.match(option)
    if match and match.group(1).upper() == LETTERS[index]:
        return option[match.end() :].strip()
    return option.strip()


def _options(entry: dict) -> tuple[str, ...]:
    options = entry.get("options")
    if not isinstance(options, list) or len(options) < 2:
        raise EntryError("'options' must be a list of at least 2 strings")
    if len(options) > len(LETTERS) or not all(isinstance(o, str) and o.strip() for o in options):
        raise EntryError("'options' must be non-empty strings, at most 26")
    return tuple(option_text(option, index) for index, option in enumerate(options))


def load_streamingbench(path: str | Path) -> LoadResult:
    """Items of a StreamingBench question file."""
    result = LoadResult()
    items = []
    for where, entry in read_entries(path):
        if isinstance(entry, Exception):
            result.problems.append(entry_problem(None, where, entry))
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("questions"), list):
            result.problems.append(entry_problem(None, where, EntryError("expected an object with 'questions'")))
            continue
        try:
            video = text_field(entry, "video_path")
        except EntryError as error:
            result.problems.append(entry_problem(None, where, error))
            continue
        entry_index = where.split()[-1]
        for q_index, question in enumerate(entry["questions"]):
            item_id = f"{Path(video).stem}_{entry_index}_{q_index}"
            try:
                items.append(_streamingbench_item(question, item_id, video))
            except EntryError as error:
                result.problems.append(entry_problem({"id": item_id}, f"{where}, question {q_index}", error))
    result.items = unique_ids(items)
    return result


def _streamingbench_item(question, item_id: str, video: str) -> EvalItem:
    if not isinstance(question, dict):
        raise EntryError("a question must be a JSON object")
    options = _options(question)
    answer = text_field(question, "answer").upper()
    if len(answer) != 1 or answer not in LETTERS[: len(options)]:
        raise EntryError(f"'answer' must be one of the option letters A-{LETTERS[len(options) - 1]}, got {answer!r}")
    return EvalItem(
        id=item_id,
        video=video,
        question=text_field(question, "question"),
        reference=answer,
        type=text_field(question, "task_type", required=False) or "all",
        kind="choice",
        timestamp=parse_time(question.get("time_stamp"), "time_stamp"),
        options=options,
    )


def load_ovo_bench(path: str | Path) -> LoadResult:
    """Items of an OVO-Bench annotation file (its multiple-choice tasks)."""
    result = LoadResult()
    items = []
    for where, entry in read_entries(path):
        try:
            if isinstance(entry, Exception):
                raise entry
            if not isinstance(entry, dict):
                raise EntryError("an entry must be a JSON object")
            task = text_field(entry, "task", required=False) or "all"
            if task in FORWARD_TASKS or "test_info" in entry:
                result.excluded.append(f"{entry.get('id', where)} ({task}: forward active responding)")
                continue
            items.append(_ovo_item(entry, where, task))
        except EntryError as error:
            result.problems.append(entry_problem(entry, where, error))
    result.items = unique_ids(items)
    return result


def _ovo_item(entry: dict, where: str, task: str) -> EvalItem:
    options = _options(entry)
    gt = entry.get("gt")
    if isinstance(gt, bool) or not isinstance(gt, int) or not 0 <= gt < len(options):
        raise EntryError(f"'gt' must be the index of the right option (0-{len(options) - 1}), got {gt!r}")
    return EvalItem(
        id=text_field(entry, "id", required=False) or where.replace(" ", "_"),
        video=text_field(entry, "video"),
        question=text_field(entry, "question"),
        reference=LETTERS[gt],
        type=task,
        kind="choice",
        timestamp=parse_time(entry.get("realtime"), "realtime"),
        options=options,
    )
