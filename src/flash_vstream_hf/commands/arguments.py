"""Argument types for every `flash-vstream` subcommand, so that a bad value is refused while the command line is
parsed, before anything is loaded or decoded: argparse prints the usage and one line naming the argument, and
exits with status 2.

Each type carries `bad_examples`, values it must refuse (tests/test_cli_arguments.py feeds them to every
subcommand)."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable

MAX_NEW_TOKENS = 32_768  # far beyond any answer; catches a mistyped 1e9 before generate() allocates for it


def integer(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number in `[low, high]` (either bound optional)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {_range(low, high)}, got {value}")
        return value

    parse.__name__ = "whole number"
    bad = ["abc", "1.5", ""]
    bad += [str(low - 1)] if low is not None else []
    bad += [str(high + 1)] if high is not None else []
    parse.bad_examples = bad
    return parse


def real(low: float | None = None, high: float | None = None, low_inclusive: bool = True) -> Callable[[str], float]:
    """An argparse type: a finite number in `[low, high]` (`(low, high]` unless `low_inclusive`)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        too_low = low is not None and (value < low or (value == low and not low_inclusive))
        if too_low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {_range(low, high, low_inclusive)}, got {value:g}")
        return value

    parse.__name__ = "number"
    bad = ["abc", "nan", "inf", ""]
    bad += [str(low if not low_inclusive else low - 1)] if low is not None else []
    bad += [str(high + 1)] if high is not None else []
    parse.bad_examples = bad
    return parse


def text(what: str = "text") -> Callable[[str], str]:
    """An argparse type: text that is not blank."""

    def parse(value: str) -> str:
        if not value.strip():
            raise argparse.ArgumentTypeError(f"the {what} is empty")
        return value

    parse.__name__ = what
    parse.bad_examples = ["", "   "]
    return parse


def integer_list(low: int = 1) -> Callable[[str], tuple[int, ...]]:
    """An argparse type: comma-separated whole numbers, each at least `low` (`100,500,2000`)."""
    item = integer(low)

    def parse(value: str) -> tuple[int, ...]:
        try:
            return tuple(item(part) for part in value.split(","))
        except argparse.ArgumentTypeError as error:
            raise argparse.ArgumentTypeError(f"{value!r}: each comma-separated item {error}") from None

    parse.__name__ = "list of whole numbers"
    parse.bad_examples = ["", "100,", "100,abc", str(low - 1)]
    return parse


_SIZE = re.compile(r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB)?$", re.IGNORECASE)


def byte_size(value: str) -> str:
    """An argparse type: a size such as `5GB` or `500MB` (as `save_pretrained(max_shard_size=...)` takes it)."""
    if not _SIZE.match(value.strip()) or not any(char in "123456789" for char in value):
        raise argparse.ArgumentTypeError(f"must be a size such as 5GB or 500MB, got {value!r}")
    return value.strip()


byte_size.bad_examples = ["", "five", "0GB", "-5GB", "5XB"]

POSITIVE = integer(1)
NON_NEGATIVE = integer(0)
PORT = integer(0, 65_535)
NEW_TOKENS = integer(1, MAX_NEW_TOKENS)
SEED = integer(0, 2**63 - 1)
FPS = real(0.0, 1_000.0, low_inclusive=False)
SECONDS = real(0.0, low_inclusive=False)
SHARE = real(0.0, 1.0)
WEIGHT = real(0.0)


class TimedQuestion(argparse.Action):
    """`--at TIME QUESTION` (nargs=2): a timestamp (`SS`, `MM:SS`, `HH:MM:SS`) and a question that is not blank,
    appended as `(seconds, question)`."""

    bad_examples = (("1:75", "What?"), ("abc", "What?"), ("10", ""), ("10", "  "))

    def __call__(self, parser, namespace, values, option_string=None):
        time, question = values
        try:
            seconds = parse_time(time)
        except argparse.ArgumentTypeError as error:
            raise argparse.ArgumentError(self, str(error)) from None
        if not question.strip():
            raise argparse.ArgumentError(self, f"the question asked at {time} is empty")
        items = list(getattr(namespace, self.dest, None) or [])
        items.append((seconds, question))
        setattr(namespace, self.dest, items)


_TIME = re.compile(r"^(?:(?:(\d+):)?(\d+):)?(\d+(?:\.\d*)?)$")


def parse_time(value: str) -> float:
    """Seconds from `SS[.s]`, `MM:SS[.s]` or `HH:MM:SS[.s]`; below the leading unit, minutes and seconds must be
    below 60 (`1:75` is a typo, not 135 s)."""
    match = _TIME.match(value.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"timestamp must be SS, MM:SS or HH:MM:SS (e.g. 00:01:30), got {value!r}")
    hours, minutes, seconds = match.groups()
    if minutes is not None and float(seconds) >= 60:
        raise argparse.ArgumentTypeError(f"seconds must be below 60 in MM:SS or HH:MM:SS, got {value!r}")
    if hours is not None and int(minutes) >= 60:
        raise argparse.ArgumentTypeError(f"minutes must be below 60 in HH:MM:SS, got {value!r}")
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds)


def _range(low, high, low_inclusive: bool = True) -> str:
    if low is not None and high is not None:
        return f"from {low:g} to {high:g}" if low_inclusive else f"above {low:g} and at most {high:g}"
    if low is not None:
        return f"at least {low:g}" if low_inclusive else f"above {low:g}"
    return f"at most {high:g}"
