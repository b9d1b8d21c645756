"""The `flash-vstream` command (also `python -m flash_vstream_hf`).

Each subcommand lives in its own module exposing `add_arguments(parser)` and `run(args) -> int`, and optionally
`check_arguments(args)`, which raises `ValueError` for what argument types cannot check alone (one argument
against another). Modules are imported when the command line is parsed, so they keep heavy imports (torch,
transformers) inside `run`. Every bad argument is refused before `run` starts: usage, one line naming it, exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS = {
    "demo": ("flash_vstream_hf.commands.demo", "a small trained model answers about a synthetic stream (offline)"),
    "train-demo": ("flash_vstream_hf.commands.train_demo", "train the demo model from scratch on synthetic streams"),
    "chat": ("flash_vstream_hf.commands.chat", "play a video file or live stream and ask questions while it runs"),
    "ask": ("flash_vstream_hf.commands.ask", "answer questions about a video as of given timestamps, in one pass"),
    "eval": ("flash_vstream_hf.commands.eval", "run a benchmark streaming: each question asked at its timestamp"),
    "index": ("flash_vstream_hf.commands.index", "build a memory file per video on Ray Data (resumable, many machines)"),
    "export-synthetic": ("flash_vstream_hf.commands.export_synthetic", "write the synthetic benchmark (VStream-QA)"),
    "convert": ("flash_vstream_hf.conversion.convert", "convert the official checkpoint (original layout) to this format"),
    "export-hub": ("flash_vstream_hf.conversion.export_hub", "add remote code, model card and handler for the Hub; upload"),
    "serve": ("flash_vstream_hf.commands.serve", "web app: play a stream and ask about it while it plays"),
    "export-space": ("flash_vstream_hf.commands.export_space", "write the web app as a Hugging Face Space folder"),
    "cluster": ("flash_vstream_hf.commands.cluster", "many streams on a Ray cluster behind one HTTP API (cluster up)"),
    "bench": ("flash_vstream_hf.benchmarks.cli", "benchmarks: STAR memory vs the alternatives (--quick for CI)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flash-vstream", description="Flash-VStream: ask questions about video streams.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        subparser = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(subparser)
        subparser.set_defaults(run=module.run)
    return parser


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed command line, every argument checked; `SystemExit(2)` with one error line otherwise."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check = getattr(importlib.import_module(COMMANDS[args.command][0]), "check_arguments", None)
    if check is not None:
        try:
            check(args)
        except ValueError as error:
            subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            subparsers.choices[args.command].error(str(error))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    return args.run(args) or 0


if __name__ == "__main__":
    sys.exit(main())
