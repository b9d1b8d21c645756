"""Reading a checkpoint in the original Flash-VStream layout (`IVGSZ/Flash-VStream-7b`, model_type `vstream`).

The folder holds `config.json` (Llama fields plus the `mm_*`, `compress_*` and `video_*` fields), the weights as
`pytorch_model*.bin` and/or `model*.safetensors` files (one file, or shards with their index), the LLaMA
tokenizer files and usually `generation_config.json` (docs/original_model.md, "Config fields", "Checkpoint keys").

Weights are read one shard at a time: safetensors tensor by tensor, `.bin` shards with
`torch.load(weights_only=True, mmap=True)`, so the resident set stays near one shard whatever the model size.
A `.bin` is only ever unpickled with `weights_only=True`: one holding anything but tensors and plain containers
is refused, and its code never runs.

A file that cannot be read (malformed JSON, a truncated or damaged weight file, a pickle that is not a plain
state dict) raises a `CheckpointError` (a `ValueError`) naming the file and what is wrong.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"
BIN_INDEX = "pytorch_model.bin.index.json"
BIN_SINGLE = "pytorch_model.bin"

# What a Hub download needs besides the weights.
_SIDE_FILES = ["*.json", "tokenizer.model"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read; the message names the file and what is wrong."""


@dataclass
class OriginalCheckpoint:
    """A local folder in the original layout.

    Attributes:
        folder: the folder.
        config: the parsed `config.json`.
        weight_files: weight files in reading order (all safetensors or all `.bin`).
        weight_map: key -> file name, from the index when there is one.
    """

    folder: Path
    config: dict
    weight_files: list[Path]
    weight_map: dict[str, str] | None

    @classmethod
    def open(cls, folder: str | os.PathLike) -> OriginalCheckpoint:
        """Open `folder`; a clear error names what is missing."""
        folder = Path(folder)
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"{folder} has no config.json; is it a Flash-VStream checkpoint folder?")
        config = read_json(config_path)
        weight_files, weight_map = find_weight_files(folder)
        return cls(folder, config, weight_files, weight_map)

    def keys(self) -> list[str]:
        """All tensor names, without reading tensor data (from the index, or each file's header)."""
        if self.weight_map is not None:
            return list(self.weight_map)
        keys = []
        for path in self.weight_files:
            keys.extend(_read_shapes(path))
        return keys

    def shapes(self, keys: list[str]) -> dict[str, tuple[int, ...]]:
        """Shapes of `keys`, reading only the files that hold them (headers, or mmap for `.bin`)."""
        wanted = set(keys)
        found: dict[str, tuple[int, ...]] = {}
        for path in self.weight_files:
            if self.weight_map is not None and not any(self.weight_map.get(k) == path.name for k in wanted):
                continue
            found.update({k: s for k, s in _read_shapes(path).items() if k in wanted})
        missing = sorted(wanted - set(found))
        if missing:
            raise KeyError(f"tensors not found in {self.folder}: {missing}")
        return found

    def iter_shards(self) -> Iterator[Iterator[tuple[str, torch.Tensor]]]:
        """One iterator of `(key, tensor)` per weight file, read one file at a time (see `iter_tensors`)."""
        for path in self.weight_files:
            yield iter_tensors(path)


def find_weight_files(folder: Path) -> tuple[list[Path], dict[str, str] | None]:
    """The weight files of `folder`, safetensors preferred over `.bin` when both are there (same weights;
    no pickle)."""
    for index_name, single_name in ((SAFETENSORS_INDEX, SAFETENSORS_SINGLE), (BIN_INDEX, BIN_SINGLE)):
        if (folder / index_name).is_file():
            weight_map = read_weight_map(folder / index_name)
            names = list(dict.fromkeys(weight_map.values()))  # file order of first appearance
            missing = [n for n in names if not (folder / n).is_file()]
            if missing:
                raise FileNotFoundError(f"{folder / index_name} lists shards that are not in {folder}: {missing}")
            return [folder / n for n in names], weight_map
        if (folder / single_name).is_file():
            return [folder / single_name], None
    orphans = sorted(p.name for p in folder.glob("*") if p.suffix in (".bin", ".safetensors"))
    if orphans:
        raise FileNotFoundError(
            f"{folder} has weight files {orphans} but no {SAFETENSORS_INDEX} or {BIN_INDEX} saying which keys they hold"
        )
    raise FileNotFoundError(
        f"{folder} holds no weights: expected {SAFETENSORS_SINGLE}, {BIN_SINGLE}, or shards with {SAFETENSORS_INDEX} "
        f"or {BIN_INDEX}"
    )


def read_json(path: Path) -> dict:
    """A JSON object from `path`; a `CheckpointError` naming the file when it is not one."""
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise CheckpointError(f"{path} is not a UTF-8 text file ({error})") from error
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is not valid JSON ({error}); the file is damaged or truncated") from error
    if not isinstance(values, dict):
        raise CheckpointError(f"{path} is not a JSON object (got {type(values).__name__})")
    return values


def read_weight_map(path: Path) -> dict[str, str]:
    """The `weight_map` (tensor name -> shard file name) of a `*.index.json`."""
    weight_map = read_json(path).get("weight_map")
    if not isinstance(weight_map, dict) or not all(
        isinstance(key, str) and isinstance(name, str) for key, name in weight_map.items()
    ):
        raise CheckpointError(f"{path} has no weight_map of tensor names to shard file names")
    return weight_map


def load_bin(path: Path) -> dict[str, torch.Tensor]:
    """A `.bin` state dict, memory-mapped when the file is in the zip format (every torch >= 1.6 save).

    Only ever `weights_only=True`: a pickle of anything but tensors and plain containers is refused unrun.
    """
    try:
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            state_dict = torch.load(path, map_location="cpu", weights_only=True)  # legacy (pre-zip) format
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path} holds more than tensors, so it is not loaded: torch.load(weights_only=True) refused it "
            f"({_refusal_reason(error)}); its pickled code was not run"
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path} is truncated or damaged ({first})") from error
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors (got {type(state_dict).__name__})")
    return state_dict


def _refusal_reason(error: Exception) -> str:
    """The `Unsupported global: ...` sentence of torch's long weights_only message (else its first line)."""
    text = str(error)
    if "Unsupported" not in text:
        return text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return text[text.index("Unsupported") :].splitlines()[0].split(". ")[0].strip()


@contextlib.contextmanager
def open_safetensors(path: Path):
    """`safe_open(path)`, a `CheckpointError` naming the file when it is truncated or not safetensors."""
    try:
        with safe_open(path, framework="pt") as handle:
            yield handle
    except (SafetensorError, OSError) as error:
        raise CheckpointError(
            f"{path} is truncated or damaged ({path.stat().st_size:,} bytes; {type(error).__name__}: {error})"
        ) from error


def iter_tensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """`(key, tensor)` pairs of one weight file; safetensors are read tensor by tensor."""
    if path.suffix == ".safetensors":
        with open_safetensors(path) as handle:
            for key in handle.keys():
                yield key, handle.get_tensor(key)
        return
    state_dict = load_bin(path)
    while state_dict:  # pop so each tensor can be freed once the caller is done with it
        key = next(iter(state_dict))
        yield key, state_dict.pop(key)


def _read_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    if path.suffix == ".safetensors":
        with open_safetensors(path) as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    return {key: tuple(tensor.shape) for key, tensor in load_bin(path).items()}


def resolve_input(source: str | os.PathLike, revision: str | None = None) -> Path:
    """A local checkpoint folder for `source`: the folder itself, or a Hub repo id downloaded to the Hub cache
    (safetensors when the repo has them, else the `.bin` shards; not both)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise NotADirectoryError(f"--input must be a checkpoint folder or a Hub repo id, got the file {path}")
    source = str(source)
    if not _REPO_ID.match(source):
        raise FileNotFoundError(f"--input {source!r} is neither an existing folder nor a Hub repo id (owner/name)")
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub import errors as hub_errors

    failures = (
        hub_errors.HfHubHTTPError,
        hub_errors.OfflineModeIsEnabled,
        hub_errors.LocalEntryNotFoundError,
        hub_errors.HTTPError,
        OSError,
    )
    try:
        files = HfApi().list_repo_files(source, revision=revision)
        weights = _hub_weight_patterns(files)
        return Path(snapshot_download(source, revision=revision, allow_patterns=weights + _SIDE_FILES))
    except failures as error:
        raise RuntimeError(
            f"could not download {source!r} from the Hugging Face Hub ({type(error).__name__}: {error}). "
            "Check the network and the repo id, or download the repo yourself and pass its folder as --input"
        ) from error


def _hub_weight_patterns(files: list[str]) -> list[str]:
    names = set(files)
    if SAFETENSORS_INDEX in names:
        return [SAFETENSORS_INDEX, "model-*.safetensors"]
    if SAFETENSORS_SINGLE in names:
        return [SAFETENSORS_SINGLE]
    if BIN_INDEX in names:
        return [BIN_INDEX, "pytorch_model-*.bin"]
    if BIN_SINGLE in names:
        return [BIN_SINGLE]
    raise ValueError(f"the Hub repo has no model weights; its files are {sorted(names)}")
