"""What the `chat` and `ask` commands share: the source options and model loading (`--model`, `--device`,
`--dtype`, `--load-in-4bit`)."""

from __future__ import annotations

import argparse
import sys
import tempfile

TINY = "tiny"
TINY_NOTE = "model: TINY MODEL WITH RANDOM WEIGHTS built on the spot (no download); its answers are gibberish by design"
DTYPES = ("auto", "float32", "bfloat16", "float16")


def add_source_arguments(parser: argparse.ArgumentParser, default_speed: float | None) -> None:
    parser.add_argument(
        "source", metavar="SOURCE",
        help="video file, live URL (rtsp://, http://, ...) or camera device (/dev/video0, or any with --input-format)",
    )  # fmt: skip
    group = parser.add_argument_group("stream")
    group.add_argument("--fps", type=float, default=1.0, help="frames sampled per second of video (default 1)")
    playback = "as if it were live" if default_speed else "as fast as possible"
    group.add_argument(
        "--speed", type=float, default=default_speed,
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
        "--model", required=True,
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
            bnb_4bit_use_double_quant=True,  # also avoids bitsandbytes' CPU absmax bug (hf_conventions §A.4)
        )
    if args.model == TINY:
        print(TINY_NOTE, file=sys.stderr)
        return _load_tiny(device, dtype, quantization)

    from transformers import AutoModelForImageTextToText, AutoProcessor

    import flash_vstream_hf  # noqa: F401  (registers the Auto classes)

    model = AutoModelForImageTextToText.from_pretrained(
        args.model, dtype=dtype, device_map=device, quantization_config=quantization
    )
    return model.eval(), AutoProcessor.from_pretrained(args.model)


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
