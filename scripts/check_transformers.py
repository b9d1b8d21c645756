#!/usr/bin/env python3
"""Run the test suite on one transformers release in a throw-away virtual environment.

    python scripts/check_transformers.py 5.25.0     # before raising the supported range to it
    python scripts/check_transformers.py floor      # the oldest supported release (CI runs this)
    python scripts/check_transformers.py newest     # the newest release inside the range

The project is installed with its extras (torch pinned to the CPU build given by --torch), then transformers is
pinned to the asked release, also outside the supported range (pip then warns that the project's requirement is
not met: that is the point), and the tests of a release given by number run with
FLASH_VSTREAM_ALLOW_ANY_TRANSFORMERS=1 so the model's own version check lets them. When they pass, raising the bound is: set NEXT_UNTESTED_TRANSFORMERS in
src/flash_vstream_hf/modeling/transformers_compat.py and the same bound in pyproject.toml.

Needs only the standard library, so it runs from any Python 3.10+.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPAT = ROOT / "src" / "flash_vstream_hf" / "modeling" / "transformers_compat.py"
EXTRAS = "video,quantization,serve,cluster,test"


def supported_bounds() -> tuple[str, str]:
    """`(floor, first untested)` as written in transformers_compat.py, read without importing transformers."""
    text = COMPAT.read_text()
    floor = re.search(r'^MINIMUM_TRANSFORMERS = "([^"]+)"', text, re.MULTILINE)
    ceiling = re.search(r'^NEXT_UNTESTED_TRANSFORMERS = "([^"]+)"', text, re.MULTILINE)
    if not floor or not ceiling:
        raise SystemExit(f"cannot read the supported range from {COMPAT}")
    return floor.group(1), ceiling.group(1)


def requirement(version: str) -> str:
    """The pip requirement for `version`: a release number, `floor` or `newest`."""
    floor, ceiling = supported_bounds()
    if version == "floor":
        return f"transformers=={floor}"
    if version == "newest":
        return f"transformers>={floor},<{ceiling}"
    if not re.fullmatch(r"\d+(\.\d+)*([a-z]+\d*)?", version):
        raise SystemExit(f"not a release number, 'floor' or 'newest': {version!r}")
    return f"transformers=={version}"


def run(command: list[str], **kwargs) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("version", help="a transformers release (e.g. 5.25.0), 'floor' or 'newest'")
    parser.add_argument("--venv", type=Path, help="keep the environment in this folder (default: a temporary one)")
    parser.add_argument("--torch", default="torch==2.13.0", help="the torch requirement (default: %(default)s)")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args(argv)

    wanted = requirement(args.version)
    venv = args.venv or Path(tempfile.mkdtemp(prefix="transformers-check-"))
    try:
        run([sys.executable, "-m", "venv", str(venv)])
        python = str(venv / "bin" / "python")
        run([python, "-m", "pip", "install", "-q", args.torch, "-e", f"{ROOT}[{EXTRAS}]"])
        run([python, "-m", "pip", "install", "-q", args.torch, wanted])
        installed = subprocess.run(
            [python, "-c", "import transformers; print(transformers.__version__)"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        print(f"testing with transformers {installed} ({wanted})", flush=True)
        environment = dict(os.environ)
        if args.version not in ("floor", "newest"):  # maybe outside the range: let the model's own check pass
            environment["FLASH_VSTREAM_ALLOW_ANY_TRANSFORMERS"] = "1"
        tests = subprocess.run(
            [python, "-m", "pytest", "-p", "no:cacheprovider", *args.pytest_args], cwd=ROOT, env=environment
        )
        return tests.returncode
    finally:
        if args.venv is None:
            shutil.rmtree(venv, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
