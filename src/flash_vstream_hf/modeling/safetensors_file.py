"""Memory files on disk, for both model families: written atomically, read without executing anything.

Writing goes to a temporary file beside the target, synced, then renamed over it: a crash or a `kill -9` at any
moment leaves the previous file intact. The temporary file's name carries the writer's process id and a random
suffix, so threads saving the same path never share one, and the next save sweeps away what a killed writer left
behind without touching the file of one that is still running. safetensors holds only tensors and strings: nothing
in a memory file is ever executed.

Only the standard library, torch and safetensors are imported: export-hub ships this module beside the v2 remote
code, which cannot import the package.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file


def write_atomically(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write `tensors` (moved to the CPU) and `metadata` to the safetensors file `path` (see the module docstring);
    the file's mode follows the umask, as any file a program writes."""
    tensors = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_leftovers(path)
    temporary = path.with_name(f"{_temporary_prefix(path)}{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # Created with 0o666 so the umask applies; safetensors itself writes 0o600, so the mode is put back afterwards.
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        mode = stat.S_IMODE(temporary.stat().st_mode)
        save_file(tensors, str(temporary), metadata=metadata)
        os.chmod(temporary, mode)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())  # the rename must never publish a file whose bytes are not on disk yet
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def read_tensors(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The metadata and tensors (on the CPU) of the safetensors file `path`; `FileNotFoundError` when there is no
    such file, `ValueError` when it is not a readable safetensors file. Nothing in them is checked yet."""
    return _read(path, with_tensors=True)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of the safetensors file `path`, without reading its tensors; errors as `read_tensors`."""
    return _read(path, with_tensors=False)[0]


def _read(path: str | os.PathLike, with_tensors: bool) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no memory file at {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()} if with_tensors else {}  # noqa: SIM118
            # (SIM118: safe_open is not iterable, only its keys() are)
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{path} is not a readable safetensors memory file: {error}") from error
    return metadata, tensors


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


def _sweep_leftovers(path: Path) -> None:
    """Remove the temporary files of writers of `path` that no longer run (killed during a save)."""
    prefix = _temporary_prefix(path)
    for leftover in path.parent.glob(f"{prefix}*.tmp"):
        pid = leftover.name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            leftover.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # another thread of this process may be writing it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


__all__ = ["read_metadata", "read_tensors", "write_atomically"]
