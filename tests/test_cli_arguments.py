"""Every `flash-vstream` subcommand refuses a bad argument while the command line is parsed, before anything is
loaded or decoded: usage, then one line naming the argument, exit status 2, never a traceback.

The walk below feeds each argument's own `bad_examples` (commands/arguments.py) to every subcommand; an argument
parsed with a bare `int` or `float` (which takes 0, -5, nan or inf) fails the walk."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from flash_vstream_hf import cli
from flash_vstream_hf.commands.arguments import TimedQuestion

# A valid command line for each subcommand, positionals first (parsed, never run).
MINIMAL = {
    "demo": [],
    "train-demo": [],
    "chat": ["video.mp4", "--model", "tiny"],
    "ask": ["video.mp4", "--model", "tiny", "--at", "10", "What is there?"],
    "eval": ["annotations.json", "--format", "rvs", "--output", "out", "--model", "tiny"],
    "index": ["video.mp4", "--out", "out", "--model", "tiny"],
    "export-synthetic": ["out"],
    "convert": ["--input", "original", "--output", "out"],
    "export-hub": ["folder"],
    "serve": [],
    "export-space": ["space"],
    "bench": [],
    "cluster up": [],
}


@pytest.fixture(scope="module")
def subparsers() -> dict[str, argparse.ArgumentParser]:
    """Name -> parser of every subcommand; nested ones (`cluster up`) by their full name."""
    return dict(_leaf_parsers(cli.build_parser(), ""))


def _leaf_parsers(parser: argparse.ArgumentParser, prefix: str):
    nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if prefix and not nested:
        yield prefix.strip(), parser
    for action in nested:
        for name, child in action.choices.items():
            yield from _leaf_parsers(child, f"{prefix} {name}")


def refused(argv: list[str], capsys) -> str:
    """The last line `flash-vstream` prints for `argv`, which it must refuse while parsing."""
    with pytest.raises(SystemExit) as exited:
        cli.parse(argv)
    assert exited.value.code == 2, argv
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_every_subcommand_has_a_valid_command_line_here(subparsers):
    assert set(subparsers) == set(MINIMAL)
    for name, argv in MINIMAL.items():
        assert cli.parse([*name.split(), *argv]).command == name.split()[0]


def test_no_argument_takes_an_unchecked_number(subparsers):
    unchecked = [
        f"{name} {action.option_strings or action.dest}"
        for name, parser in subparsers.items()
        for action in parser._actions
        if action.type in (int, float)
    ]
    assert unchecked == []


def bad_command_lines(name: str, parser: argparse.ArgumentParser):
    """`(argument, argv)` for each bad example of each checked argument of subcommand `name`."""
    positionals = [a for a in parser._actions if not a.option_strings]
    for action in parser._actions:
        if isinstance(action, TimedQuestion):
            examples = [list(pair) for pair in action.bad_examples]
        elif hasattr(action.type, "bad_examples"):
            examples = [[value] for value in action.type.bad_examples]
        else:
            continue
        for example in examples:
            argv = list(MINIMAL[name])
            if action.option_strings:
                argv += [action.option_strings[0], *example]
                yield action.option_strings[0], argv
            else:
                argv[positionals.index(action)] = example[0]
                yield action.metavar or action.dest, argv


def test_every_bad_value_of_every_argument_is_refused_naming_it(subparsers, capsys):
    walked = 0
    for name, parser in subparsers.items():
        for argument, argv in bad_command_lines(name, parser):
            line = refused([*name.split(), *argv], capsys)
            assert line.startswith(f"flash-vstream {name}: error: argument {argument}"), (argv, line)
            walked += 1
    assert walked > 150  # the walk reached every subcommand's numbers and texts


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "--eval", "--eval-first-seed", "999990"], "held-out seeds must lie in"),
        (["train-demo", "--min-length", "50", "--max-length", "10"], "--min-length 50 is above --max-length 10"),
        (["eval", *MINIMAL["eval"], "--judge-url", "http://x", "--judge-local", "m"], "not allowed with argument"),
        (["cluster", "up", "--host", "0.0.0.0"], "exposes the API beyond this machine: set --token"),
    ],
)
def test_arguments_that_contradict_each_other_are_refused_before_running(argv, message, capsys):
    assert message in refused(argv, capsys)


@pytest.mark.parametrize(
    "arguments",
    [["--at", "10", ""], ["--at", "10", "What?", "--max-new-tokens", "0"], ["--at", "10", "What?", "--max-new-tokens",
     "-5"], ["--at", "1:75", "What?"]],
)  # fmt: skip
def test_ask_refuses_its_arguments_before_it_opens_the_video(arguments, tmp_path):
    # the video does not exist: had the command opened it first, it would say so, with exit status 1
    command = [sys.executable, "-m", "flash_vstream_hf", "ask", str(tmp_path / "missing.mp4"), "--model", "tiny"]
    done = subprocess.run([*command, *arguments], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "missing.mp4" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("flash-vstream ask: error: argument")
