"""The predictions file: one JSON line per question, appended and flushed as each is answered, so a killed run
loses at most the line being written.

`ResultsFile.load()` reads what a previous run wrote: a half-written last line (a kill mid-write) is cut off,
so that the rerun asks that question again and appends after the last complete line; a damaged line elsewhere
is reported and ignored (its question is asked again), never deleted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from transformers.utils import logging

logger = logging.get_logger(__name__)


class ResultsFile:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def load(self) -> dict[str, dict]:
        """`{id: record}` of the complete lines already written (the last one wins if an id repeats)."""
        if not self.path.exists():
            return {}
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1  # bytes up to the last complete line
        if end < len(data):
            logger.warning(
                "%s: the last line was cut off (%d bytes, a run killed while writing it): dropped, its question is "
                "asked again", self.path, len(data) - end,
            )  # fmt: skip
            with open(self.path, "r+b") as file:
                file.truncate(end)
        records = {}
        for number, line in enumerate(data[:end].splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                records[str(record["id"])] = record
            except (ValueError, KeyError, TypeError):
                logger.warning("%s line %d is not a prediction record: ignored, its question is asked again",
                               self.path, number)  # fmt: skip
        return records

    def append(self, record: dict) -> None:
        """Write one record as one line, and push it to disk before the next question is asked."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as file:
            file.write(line)
            file.flush()
            os.fsync(file.fileno())
