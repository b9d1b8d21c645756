"""The settings a resumable run records beside its outputs (`eval`'s `run.json`, `index`'s `index-run.json`), so that
a rerun with other settings is refused instead of mixing incomparable outputs in one folder."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path


def check_recorded_settings(path: Path, settings: dict, keys: Iterable[str]) -> str | None:
    """Record `settings` at `path` (a JSON file), or, if a readable record is there, name the `keys` whose values
    differ from it (`"fps: 1.0 then, 2.0 now, ..."`); None when they agree or nothing was recorded."""
    if path.exists():
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            recorded = None
        if isinstance(recorded, dict):
            differing = [key for key in keys if recorded.get(key) != settings.get(key)]
            return ", ".join(f"{key}: {recorded.get(key)!r} then, {settings.get(key)!r} now" for key in differing) or None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    return None
