"""`flash-vstream serve`: the web app. Pick a built-in stream, upload a video, or open a webcam or stream URL;
it plays while the model ingests it into STAR memory; ask questions at any moment (one memory per browser tab,
one loaded model for all).

`--model` is `demo` (the small trained model, the default when it is installed), `tiny` (random weights, the
default otherwise) or a converted checkpoint folder / Hub id, loaded as `chat` loads it (`--device`,
`--dtype`, `--load-in-4bit`). Binds to 127.0.0.1: to let other machines in, pass `--host 0.0.0.0`.

A stream URL typed into the page is opened only when every address its host resolves to is public (never this
machine, its LAN or cloud metadata; streaming/url_guard.py): `--allow-private-urls` lifts that for a server on a
trusted network, `--allow-url-host 192.168.1.0/24` (or a host name, repeatable) opens up just those.
"""

from __future__ import annotations

import argparse
import sys

from ..serving.app import DEFAULT_HOST, DEFAULT_PORT
from ..streaming.url_guard import ALLOW_FLAG, UrlPolicy
from .arguments import NEW_TOKENS, PORT, POSITIVE, text
from .common import DTYPES, TINY, load_model

DEMO = "demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model", default=None, type=text("model"),
        help="demo (the small trained model; default when installed), tiny (random weights; default otherwise), "
        "or a converted checkpoint folder or Hub id",
    )  # fmt: skip
    group.add_argument("--device", default=None, help="cpu, cuda, cuda:1 or auto; default cuda if available")
    group.add_argument("--dtype", choices=DTYPES, default="auto", help="weights dtype (default: the checkpoint's)")
    group.add_argument("--load-in-4bit", action="store_true", help="bitsandbytes NF4 weights for the LLM")
    server = parser.add_argument_group("server")
    server.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST}: this machine)")
    server.add_argument("--port", type=PORT, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free)")
    server.add_argument("--max-sessions", type=POSITIVE, default=8, help="browser tabs served at once (default 8)")
    server.add_argument("--max-new-tokens", type=NEW_TOKENS, default=None, help="answer length (default: per model)")
    server.add_argument("--threads", type=POSITIVE, default=None, help="torch threads (default: torch's)")
    urls = parser.add_argument_group("stream URLs typed into the page")
    urls.add_argument(
        ALLOW_FLAG, action="store_true",
        help="open URLs to any address, this machine's and its LAN's included (and RTSP/RTMP to any host); "
        "default: public addresses only",
    )  # fmt: skip
    urls.add_argument(
        "--allow-url-host", action="append", default=[], type=allow_list_entry, metavar="HOST_OR_CIDR",
        help="also open URLs to this host name, address or network (e.g. a camera LAN, 192.168.1.0/24); repeatable",
    )  # fmt: skip


def allow_list_entry(text: str) -> str:
    """argparse type of --allow-url-host: an address, a CIDR or a host name."""
    try:
        UrlPolicy.from_allow_list([text])
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def url_policy(args: argparse.Namespace) -> UrlPolicy:
    return UrlPolicy.from_allow_list(args.allow_url_host, allow_private=args.allow_private_urls)


def resolve(args: argparse.Namespace):
    """The `ServedModel` for the arguments; `SystemExit(1)` with one line on stderr when it cannot be loaded."""
    from ..serving.loading import default_model, demo_checkpoint, describe

    name = args.model or default_model()
    if name == DEMO:
        checkpoint = demo_checkpoint()
        if checkpoint is None:
            print("flash-vstream serve: error: --model demo: the demo model is not installed "
                  "(train it with `flash-vstream train-demo`), use --model tiny", file=sys.stderr)  # fmt: skip
            raise SystemExit(1)
        if not (args.load_in_4bit or args.device or args.dtype != "auto"):
            from ..synthetic.checkpoint import demo_model

            model, processor = demo_model()  # the demo's own loader, as `flash-vstream demo` uses it
        else:  # a converted folder like any other: the options apply as they do to `chat`
            model, processor = load_model(_with_model(args, str(checkpoint)))
        return describe(model, processor, DEMO)
    model, processor = load_model(_with_model(args, name))  # a failure: one line on stderr, exit status 1
    return describe(model, processor, TINY if name == TINY else name)


def _with_model(args: argparse.Namespace, model: str) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "model": model, "command": "serve"})


def run(args: argparse.Namespace) -> int:
    import torch

    from ..serving import ServeApp

    if args.threads:
        torch.set_num_threads(args.threads)
    served = resolve(args)
    if args.max_new_tokens:
        served.max_new_tokens = args.max_new_tokens
    app = ServeApp(served, max_sessions=args.max_sessions, url_policy=url_policy(args))
    print(f"model: {served.name}; open http://{args.host}:{args.port or '<port>'} (Ctrl-C to stop)", file=sys.stderr)
    try:
        app.launch(host=args.host, port=args.port or None, block=True)
    except KeyboardInterrupt:
        pass
    except OSError as error:  # the port is taken, the address is not this machine's
        print(f"flash-vstream serve: error: cannot serve on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    return 0
