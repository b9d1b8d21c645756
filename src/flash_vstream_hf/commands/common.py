"""What the `chat` and `ask` commands share: the source options and model loading (`--model`, `--device`,
`--dtype`, `--load-in-4bit`).

A `--model` that cannot be loaded (no such folder, a damaged `config.json` or weight file, a Hub id that cannot be
fetched) ends the command with one line on stderr naming the path and what is wrong, and exit status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from ..families import FAMILIES
from .arguments import FPS, real, text

TINY = "tiny"
SAFETENSORS_SINGLE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
OTHER_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")  # transformers reads them; not checked here
LOAD_FAILED = 1  # exit status when --model cannot be loaded
TINY_NOTE = "model: TINY MODEL WITH RANDOM WEIGHTS built on the spot (no download); its answers are gibberish by design"
DTYPES = ("auto", "float32", "bfloat16", "float16")


class ModelLoadError(Exception):
    """`--model` cannot be loaded; the message is the one line the command prints."""


def add_source_arguments(parser: argparse.ArgumentParser, default_speed: float | None) -> None:
    parser.add_argument(
        "source", metavar="SOURCE", type=text("source"),
        help="video file, live URL (rtsp://, http://, ...) or camera device (/dev/video0, or any with --input-format)",
    )  # fmt: skip
    group = parser.add_argument_group("stream")
    group.add_argument("--fps", type=FPS, default=1.0, help="frames sampled per second of video (default 1)")
    playback = "as if it were live" if default_speed else "as fast as possible"
    group.add_argument(
        "--speed", type=real(0.0), default=default_speed,
        help=f"play a file at this multiple of real time, 0 for as fast as possible (default: {playback})",
    )  # fmt: skip
    group.add_argument(
        "--backend", choices=("decord", "pyav"), help="video file decoder (default: the first installed)"
    )
    group.add_argument("--input-format", help="FFmpeg input format of a live input, e.g. v4l2, avfoundation, dshow")


def stream_options(args: argparse.Namespace) -> dict:
    """Keyword arguments for `StreamingSession.start` from the source options."""
    return {"fps": args.fps, "speed": args.speed or None, "backend": args.backend, "input_format": args.input_format}


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model", required=True, type=text("model"),
        help=f"converted checkpoint folder or Hub id, or {TINY!r} for the built-in tiny random model (no download)",
    )  # fmt: skip
    group.add_argument(
        "--device", default=None,
        help="where to load it: cpu, cuda, cuda:1, or auto (accelerate device_map); default cuda if available",
    )  # fmt: skip
    group.add_argument("--dtype", choices=DTYPES, default="auto", help="weights dtype (default: the checkpoint's)")
    group.add_argument("--load-in-4bit", action="store_true", help="bitsandbytes NF4 weights for the LLM")


def load_model(args: argparse.Namespace):
    """`(model, processor)` for the command-line arguments; notes go to stderr so stdout stays clean."""
    import torch
    from transformers import BitsAndBytesConfig

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
    quantization = None
    if args.load_in_4bit:
        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16 if dtype == "auto" else dtype,
            bnb_4bit_use_double_quant=True,  # also avoids bitsandbytes' CPU absmax bug (docs/transformers_notes.md)
        )
    if args.model == TINY:
        print(TINY_NOTE, file=sys.stderr)
        return _load_tiny(device, dtype, quantization)
    try:
        return _load_pretrained(args.model, device, dtype, quantization)
    except ModelLoadError as error:
        print(f"flash-vstream {getattr(args, 'command', None) or 'error'}: error: {error}", file=sys.stderr)
        raise SystemExit(LOAD_FAILED) from None


def _load_pretrained(model: str, device: str, dtype, quantization):
    """`(model, processor)` from a converted folder or Hub id; a `ModelLoadError` says what is wrong."""
    from safetensors import SafetensorError
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import flash_vstream_hf  # noqa: F401  (registers the Auto classes)

    folder = Path(model).expanduser()
    if folder.exists() or not _is_hub_id(model):
        check_model_folder(folder)
    try:
        loaded = AutoModelForImageTextToText.from_pretrained(
            model, dtype=dtype, device_map=device, quantization_config=quantization
        )
        return loaded.eval(), AutoProcessor.from_pretrained(model)
    except (OSError, ValueError, KeyError, RuntimeError, ImportError, SafetensorError) as error:
        # what the checks above cannot see: a Hub id that cannot be fetched, a weight of the wrong shape, ...
        where = "" if folder.exists() else " (no such folder; tried as a Hub repo id)"
        raise ModelLoadError(f"could not load --model {model}{where}: {_one_line(error)}") from error


def check_model_folder(folder: str | os.PathLike) -> None:
    """Raise a `ModelLoadError` naming the path when `folder` is not a loadable converted checkpoint: missing,
    not a folder, no or a damaged `config.json`, another model type, missing or damaged safetensors weights, or
    a JSON file that does not parse. Reads headers only, not the weights."""
    folder = Path(folder)
    if not folder.exists():
        raise ModelLoadError(f"--model {folder}: no such folder (and not a Hub repo id, owner/name)")
    if not folder.is_dir():
        raise ModelLoadError(f"--model {folder}: not a folder; give the folder `flash-vstream convert` wrote")
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder} has no config.json: not a converted Flash-VStream checkpoint folder")
    for path in sorted(folder.glob("*.json")):
        _read_json(path)
    model_type = _read_json(folder / "config.json").get("model_type")
    if model_type not in FAMILIES:
        raise ModelLoadError(
            f"{folder / 'config.json'} is a {model_type!r} config, not one of {', '.join(map(repr, FAMILIES))}; an "
            "original Flash-VStream checkpoint (model_type 'vstream') must be converted first: flash-vstream convert "
            "--input ... --output ..."
        )
    for path in _weight_files(folder):
        _check_safetensors(path)


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors files `from_pretrained` will read; an error when they are missing."""
    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(name, str) for name in weight_map.values()):
            raise ModelLoadError(f"{index} has no weight_map of tensor names to shard files")
        shards = [folder / name for name in dict.fromkeys(weight_map.values())]
        missing = [str(path) for path in shards if not path.is_file()]
        if missing:
            raise ModelLoadError(f"{index} lists shards that are missing: {', '.join(missing)}")
        return shards
    if (folder / SAFETENSORS_SINGLE).is_file():
        return [folder / SAFETENSORS_SINGLE]
    if any((folder / name).is_file() for name in OTHER_WEIGHTS):
        return []
    raise ModelLoadError(f"{folder} has no model weights ({SAFETENSORS_SINGLE}, or shards and {SAFETENSORS_INDEX})")


def _check_safetensors(path: Path) -> None:
    """Open the header (memory-mapped, no tensor read): safetensors checks it covers the whole file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt"):
            pass
    except (SafetensorError, OSError) as error:
        raise ModelLoadError(
            f"{path} is truncated or damaged ({path.stat().st_size:,} bytes; {_one_line(error)}); "
            "convert or download it again"
        ) from error


def _read_json(path: Path) -> dict:
    """`read_json` (the converter's checked reader), its errors as the one line the command prints."""
    from ..conversion.original_checkpoint import CheckpointError, read_json

    try:
        return read_json(path)
    except OSError as error:
        raise ModelLoadError(f"{path} cannot be read: {_one_line(error)}") from error
    except CheckpointError as error:
        raise ModelLoadError(str(error)) from error


def _is_hub_id(model: str) -> bool:
    """Whether `model` can name a Hub repo (`name` or `owner/name`), and does not read as a path."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if model.startswith((".", "~", os.sep)) or model.count("/") > 1:
        return False
    try:
        validate_repo_id(model)
    except HFValidationError:
        return False
    return True


def _one_line(error: BaseException) -> str:
    """`Type: message` on one line (transformers' messages often run over several)."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _load_tiny(device: str, dtype, quantization):
    from transformers import AutoModelForImageTextToText

    from ..tiny import tiny_config, tiny_model, tiny_processor

    config = tiny_config()
    model, processor = tiny_model(config), tiny_processor(config)
    if quantization is None:
        return model.to(device, None if dtype == "auto" else dtype), processor
    # bitsandbytes quantizes while loading: save the tiny model and load it back quantized.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as folder:
        model.save_pretrained(folder)
        model = AutoModelForImageTextToText.from_pretrained(folder, quantization_config=quantization, device_map=device)
    return model.eval(), processor
