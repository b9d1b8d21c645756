"""`flash-vstream export-space DIR`: write the web app (`flash-vstream serve`) as a Hugging Face Space folder.

The folder runs without this package (see `serving/space_export.py` for how and why): upload it with
`hf upload OWNER/SPACE DIR --repo-type space`, or run it locally with `python DIR/app.py`.
"""

from __future__ import annotations

import argparse
import sys

from .arguments import text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "folder", metavar="DIR", type=text("folder"), help="the Space folder to write (created if needed)"
    )
    parser.add_argument(
        "--model-repo", metavar="REPO",
        help="the Hub model the Space serves and links (owner/name, e.g. one `export-hub --push-to-hub` made); "
        "default: the bundled demo model",
    )  # fmt: skip
    parser.add_argument("--title", default="Flash-VStream", type=text("title"), help="the Space's title")
    parser.add_argument("--no-demo-model", action="store_true", help="do not bundle the demo model (1.8 MB)")


def run(args: argparse.Namespace) -> int:
    from ..serving.space_export import export_space

    try:
        written = export_space(args.folder, args.model_repo, title=args.title, bundle_demo=not args.no_demo_model)
    except (OSError, ValueError, ImportError) as error:
        print(f"flash-vstream export-space: error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.folder}: {', '.join(written)}")
    if args.model_repo is None:
        print("note: no --model-repo: the Space serves the bundled demo model and its README links no model",
              file=sys.stderr)  # fmt: skip
    return 0
