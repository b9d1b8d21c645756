"""Judge answers on disk, keyed by a hash of everything that determines them: the judge's identity (kind and
model), the prompt version, the messages and the temperature. A rerun reads them back and sends nothing; a
different judge or prompt gets other keys, so its verdicts never mix with the old ones.

One small JSON file per answer (`<key[:2]>/<key>.json`), written to a temporary file and renamed, so a run
killed mid-write leaves no half file and two runs can share a cache. The endpoint URL is stored with each answer
but is not part of the key: the same model moved to another server is the same judge.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


def cache_key(identity: dict, messages: list[dict], temperature: float, prompt_version: str) -> str:
    payload = {"judge": identity, "messages": messages, "temperature": temperature, "prompt": prompt_version}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


class JudgeCache:
    """Replies of judges, one file per key under `folder`."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        """The stored entry (`reply`, `identity`, ...), or None; an unreadable entry counts as missing."""
        try:
            entry = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return entry if isinstance(entry, dict) and isinstance(entry.get("reply"), str) else None

    def put(self, key: str, entry: dict) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                json.dump(entry, file, ensure_ascii=False, indent=1)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
