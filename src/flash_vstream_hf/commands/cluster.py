"""`flash-vstream cluster up`: many streams on a Ray cluster behind one HTTP API (see docs/cluster.md).

Starts a local Ray (or joins one with `--address`), N stream hosts (one model each, up to S streams), a registry
that recovers streams from their checkpoints when a host dies, and a Ray Serve gateway on HOST:PORT. Ctrl-C
closes every stream (checkpoints kept) and stops all of it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from ..streaming.url_guard import ALLOW_FLAG
from .arguments import NEW_TOKENS, PORT, POSITIVE, real, text
from .serve import allow_list_entry

DEFAULT_PORT = 8000
FRACTION = real(0.0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = actions.add_parser("up", help="start the hosts, the registry and the gateway; Ctrl-C stops them")
    up.add_argument("--address", type=text("address"), default=None, help="join this Ray cluster (default: start one)")
    up.add_argument("--model", type=text("model"), default="demo",
                    help="demo (the shipped demo model, default), tiny, or a checkpoint folder / Hub id")  # fmt: skip
    up.add_argument("--load-in-4bit", action="store_true", help="bitsandbytes NF4 weights for the LLM")
    up.add_argument("--hosts", type=POSITIVE, default=1, help="stream hosts (one loaded model each; default 1)")
    up.add_argument("--streams-per-host", type=POSITIVE, default=4, help="streams one host owns at most (default 4)")
    up.add_argument("--host-cpus", type=FRACTION, default=1.0, help="Ray CPUs per host (default 1)")
    up.add_argument("--host-gpus", type=FRACTION, default=None, help="Ray GPUs per host (default 1 if Ray sees one)")
    up.add_argument("--host", type=text("host"), default="127.0.0.1",
                    help="address the API binds (default 127.0.0.1; any other needs --token)")  # fmt: skip
    up.add_argument("--port", type=PORT, default=DEFAULT_PORT, help=f"API port (default {DEFAULT_PORT})")
    up.add_argument("--token", type=text("token"), default=None, help="bearer token every request must carry")
    up.add_argument("--checkpoint-dir", type=text("checkpoint dir"), default="flash-vstream-checkpoints",
                    help="folder or fsspec URL for checkpoints and the registry (default ./flash-vstream-checkpoints)")
    up.add_argument("--checkpoint-every", type=POSITIVE, default=20, help="frames between checkpoints (K, default 20)")
    up.add_argument("--media-root", type=text("media root"), default=None,
                    help="the folder file sources may come from (default: no file sources)")  # fmt: skip
    up.add_argument("--max-new-tokens", type=NEW_TOKENS, default=64, help="default answer length (default 64)")
    up.add_argument(ALLOW_FLAG, action="store_true", help="let URL sources reach private and loopback addresses")
    up.add_argument("--allow-url-host", action="append", default=[], type=allow_list_entry, metavar="HOST_OR_CIDR",
                    help="also let URL sources reach this host, address or network; repeatable")  # fmt: skip


def settings_of(args: argparse.Namespace, gpus: float = 0.0):
    from ..cluster.settings import ClusterSettings

    return ClusterSettings(
        model=args.model, store=args.checkpoint_dir, hosts=args.hosts, streams_per_host=args.streams_per_host,
        checkpoint_every=args.checkpoint_every, media_root=args.media_root, allow_private_urls=args.allow_private_urls,
        allow_url_hosts=tuple(args.allow_url_host), token=args.token, host=args.host, port=args.port,
        load_in_4bit=args.load_in_4bit, host_cpus=args.host_cpus,
        host_gpus=args.host_gpus if args.host_gpus is not None else gpus, max_new_tokens=args.max_new_tokens,
    )  # fmt: skip


def check_arguments(args: argparse.Namespace) -> None:
    from ..cluster.runtime import check_exposure

    check_exposure(settings_of(args))


def run(args: argparse.Namespace) -> int:
    import ray

    from ..cluster.runtime import start_cluster

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ray.init(address=args.address, namespace="flash-vstream")
    gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= args.hosts else 0.0
    cluster = None
    try:
        cluster = start_cluster(settings_of(args, gpus))
        cluster.started_ray = True  # this command started (or joined) Ray: it shuts it down
        print(f"flash-vstream cluster: {args.hosts} host(s) x {args.streams_per_host} streams, model {args.model}; "
              f"API on {cluster.url} (OpenAPI: {cluster.url}/docs); Ctrl-C to stop", file=sys.stderr, flush=True)
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        print("flash-vstream cluster: stopping", file=sys.stderr, flush=True)
        if cluster is not None:
            cluster.stop()
        elif ray.is_initialized():
            ray.shutdown()
    return 0
