"""Reading annotation files entry by entry, so that one malformed entry is reported and skipped, not fatal.

A file is either one JSON document (a list of entries, or an object holding one under a list-valued key) or
JSON Lines (one entry per line; a line that does not parse is reported with its line number). Times are
seconds, `HH:MM:SS`/`MM:SS` strings, or MovieNet shot names (`shot_0042`: shot index 42, which is frame 42 of a
folder of one keyframe per shot).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from .items import EvalItem, Problem

_SHOT = re.compile(r"^shot_(\d+)$")
_CLOCK = re.compile(r"^(?:(?:(\d+):)?(\d+):)?(\d+(?:\.\d*)?)$")


class AnnotationError(ValueError):
    """The file as a whole cannot be read (missing, not JSON or JSON Lines): nothing to evaluate."""


class EntryError(ValueError):
    """One entry is malformed; the message says which field and why."""


def read_entries(path: str | Path) -> Iterator[tuple[str, object]]:
    """`(where, entry)` for every entry of the file, `where` naming it for messages (`entry 3`, `line 7`); a JSON
    Lines line that does not parse is yielded as `(where, EntryError)`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise AnnotationError(f"cannot read annotations {path}: {error}") from error
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        document = None
        if not text.strip():
            raise AnnotationError(f"annotations {path} are empty") from None
    if document is not None:
        entries = _entry_list(document, path)
        for index, entry in enumerate(entries):
            yield f"entry {index}", entry
        return
    lines = text.splitlines()
    if len(lines) < 2 and not text.lstrip().startswith("{"):
        raise AnnotationError(f"annotations {path} are neither JSON nor JSON Lines")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield f"line {number}", json.loads(line)
        except json.JSONDecodeError as error:
            yield f"line {number}", EntryError(f"not valid JSON ({error.msg} at column {error.colno})")


def _entry_list(document, path: Path) -> list:
    if isinstance(document, list):
        return document
    if isinstance(document, dict):
        lists = [value for value in document.values() if isinstance(value, list)]
        if len(lists) == 1:
            return lists[0]
    raise AnnotationError(f"annotations {path}: expected a JSON list of entries, got {type(document).__name__}")


def text_field(entry: dict, name: str, required: bool = True) -> str | None:
    """A string field (numbers are taken as their text: some answers are counts)."""
    value = entry.get(name)
    if value is None:
        if required:
            raise EntryError(f"no {name!r}")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise EntryError(f"{name!r} must be a string, got {type(value).__name__}")
    text = str(value).strip()
    if required and not text:
        raise EntryError(f"{name!r} is empty")
    return text


def parse_time(value, name: str = "time") -> float:
    """Seconds from a number, `SS`, `MM:SS`, `HH:MM:SS` or `shot_N`; an `EntryError` for anything else, a
    negative or a non-finite time."""
    if isinstance(value, bool):
        raise EntryError(f"{name!r} must be a time, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        shot = _SHOT.match(text)
        clock = _CLOCK.match(text)
        if shot:
            seconds = float(shot.group(1))
        elif clock:
            hours, minutes, secs = clock.groups()
            seconds = int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(secs)
        else:
            raise EntryError(f"{name!r} is not a time (seconds, HH:MM:SS or shot_N): {value!r}")
    else:
        raise EntryError(f"{name!r} must be a time, got {type(value).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise EntryError(f"{name!r} must be a finite time >= 0, got {value!r}")
    return seconds


def unique_ids(items: list[EvalItem]) -> list[EvalItem]:
    """Items whose ids are unique: a repeated id gets `#1`, `#2`, ... in order of appearance (a rerun must know
    which question a line answers; the original evaluator renamed repeats the same way, with `_k`)."""
    seen: dict[str, int] = {}
    result = []
    for item in items:
        count = seen.get(item.id, 0)
        seen[item.id] = count + 1
        if count:
            item = replace(item, id=f"{item.id}#{count}")
        result.append(item)
    return result


def entry_problem(entry, where: str, error: Exception, id_key: str = "id") -> Problem:
    """A `Problem` for a malformed entry, named by its id when it has one, else by its place in the file."""
    entry_id = entry.get(id_key) if isinstance(entry, dict) else None
    if isinstance(entry_id, (str, int)) and not isinstance(entry_id, bool):
        return Problem(str(entry_id), "annotation", f"{where}: {error}")
    return Problem(where, "annotation", str(error))
