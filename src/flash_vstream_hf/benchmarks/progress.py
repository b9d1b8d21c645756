"""Progress of the benchmark's long steps on stderr, with transformers' progress bars.

The bars come from `transformers.utils.logging.tqdm`, so transformers' switch turns them off
(`transformers.utils.logging.disable_progress_bar()`, `HF_HUB_DISABLE_PROGRESS_BARS=1`). They are only updated
between timed calls, never inside one.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm.auto import tqdm as tqdm_lib
from transformers.utils import logging


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str, unit: str = "it"):
    """A progress bar on stderr (a no-op one when transformers' progress bars are off)."""
    return logging.tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr)


def log(message: str) -> None:
    """Print a step message on stderr without breaking a progress bar that is being drawn."""
    tqdm_lib.write(message, file=sys.stderr)
    sys.stderr.flush()
