"""`flash-vstream chat SOURCE --model M`: play a stream and ask questions while it runs.

In a terminal the prompt has a live status bar (stream time, frames, ingest fps, memory tokens); with piped
input every line is a question. Commands: `/status`, `/wait [N]` (until N frames are in memory, or the stream
has ended), `/save PATH` (the memory; a save that fails is reported and the chat goes on), `/quit`. With standard
input closed there is nothing to read questions from: it exits with status 2 and says so.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from .arguments import NEW_TOKENS, text
from .common import add_model_arguments, add_source_arguments, load_model, stream_options

HELP = "Type a question and press Enter while the video plays. /status, /wait [N], /save PATH, /quit (or Ctrl-D)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser, default_speed=1.0)
    parser.add_argument("--max-new-tokens", type=NEW_TOKENS, default=256, help="tokens per answer (default 256)")
    parser.add_argument("--resume", metavar="MEMORY", type=text("memory path"), help="continue from a memory saved with /save or --save-memory")
    parser.add_argument("--save-memory", metavar="PATH", type=text("memory path"), help="save the memory to PATH on exit")
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..families import memory_class
    from ..streaming import StreamingSession

    if not _stdin_is_open():
        print("error: standard input is closed: chat reads its questions from it (pipe them in, or use a terminal)",
              file=sys.stderr)  # fmt: skip
        return 2
    model, processor = load_model(args)
    try:
        memory = memory_class(model).load(args.resume, device=model.device) if args.resume else None
    except (OSError, ValueError) as error:  # missing, damaged, or another model's memory file
        print(f"error: --resume {args.resume}: {error}", file=sys.stderr)
        return 1
    session = StreamingSession(
        model, processor, memory=memory, generation_kwargs={"max_new_tokens": args.max_new_tokens}
    )
    try:
        session.start(args.source, **stream_options(args))
    except (OSError, ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(HELP)
    with session:
        try:
            if sys.stdin.isatty():
                _interactive(session)
            else:
                for line in sys.stdin:
                    if not handle_line(session, line, sys.stdout):
                        break
        except KeyboardInterrupt:
            pass
        session.stop()
        print(session.status().line())
        if args.save_memory and not save_memory(session, args.save_memory, sys.stdout, sys.stderr):
            return 1
    return 0


def _stdin_is_open() -> bool:
    """False when there is no standard input (Python started with it closed sets `sys.stdin` to None) or it was
    closed."""
    return sys.stdin is not None and not getattr(sys.stdin, "closed", False)


def save_memory(session, path: str, out: TextIO, err: TextIO) -> bool:
    """Save the session's memory to `path`; a failure (a folder that cannot be written, a full disk) is printed
    to `err` and returned as False: the session and its memory stay as they were."""
    try:
        session.save_memory(path)
    except Exception as error:
        print(f"error: cannot save the memory to {path}: {type(error).__name__}: {error}", file=err)
        return False
    print(f"memory saved to {path}", file=out)
    return True


def handle_line(session, line: str, out: TextIO) -> bool:
    """Run one command or question; False to end the chat."""
    from ..streaming import NoFramesError

    line = line.strip()
    command, _, argument = line.partition(" ")
    if not line:
        return True
    if command in ("/quit", "/exit"):
        return False
    if command == "/status":
        print(session.status().line(), file=out)
    elif command == "/wait":
        if not argument.strip():
            session.wait()
        elif argument.strip().isdigit():
            session.wait_for_frames(int(argument))
        else:
            print(f"usage: /wait [N] (N a number of frames), got {argument.strip()!r}", file=out)
            return True
        print(session.status().line(), file=out)
    elif command == "/save":
        if not argument.strip():
            print("usage: /save PATH", file=out)
        else:
            save_memory(session, argument.strip(), out, out)
    elif command.startswith("/"):
        print(f"unknown command {command}; {HELP}", file=out)
    else:
        try:
            stream = session.ask_stream(line)
            print("A: ", end="", file=out, flush=True)
            for text in stream:
                print(text, end="", file=out, flush=True)
            answer = stream.answer
            print(
                f"\n   [memory: {answer.frames} frames, {answer.memory_tokens} tokens, up to t="
                f"{'--' if answer.stream_time is None else f'{answer.stream_time:.1f}'} s; first token "
                f"{answer.time_to_first_token or 0:.2f} s, answer {answer.latency:.2f} s]",
                file=out,
            )
        except NoFramesError:
            print("(no frame in memory yet: ask again in a moment)", file=out)
        except Exception as error:  # the stream goes on; the session has logged and counted it
            print(f"\nerror: {type(error).__name__}: {error}", file=out)
    return True


def _interactive(session) -> None:
    """Prompt with a status bar refreshed twice a second while the user types."""
    from prompt_toolkit import PromptSession

    prompt = PromptSession(bottom_toolbar=lambda: " " + session.status().line(), refresh_interval=0.5)
    while True:
        try:
            line = prompt.prompt("question> ")
        except EOFError:
            return
        if not handle_line(session, line, sys.stdout):
            return
