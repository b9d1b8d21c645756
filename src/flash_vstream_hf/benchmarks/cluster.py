"""`python -m flash_vstream_hf.benchmarks.cluster`: the streaming runtime on Ray (`flash-vstream cluster up`), on
this machine, through its HTTP API. Four measurements, in one run, on one local Ray:

- **capacity**: streams one host sustains at 1 fps. Each trial opens `n` streams of a file played as if live
  (`speed=1`), waits until every one has frames and the frames queued while they opened are ingested (at most
  60 s), then counts the frames ingested during `--window` seconds. A count is sustained when the host ingests
  at least 98% of the frames offered and no stream has more than two frames waiting; past that, the backlog
  grows until a live source starts dropping frames. Counts double until one is not sustained, then one
  bisection step between the last two.
- **throughput**: frames/s the cluster ingests from `--streams` files read as fast as they decode, with 1 host
  and with 2 hosts (each host one Ray CPU, so one torch thread).
- **recovery**: for each K (`--checkpoint-every` of the cluster), the owner's process of a stream is SIGKILLed
  `--kills` times; the seconds from the kill to the next answer, and the frames that were not in the last
  checkpoint (read again for a file; a live source loses them, plus its downtime times its fps).
- **checkpoint bytes** per stream: the memory file plus `checkpoint.json`, for the tiny test model, the demo
  model and the released 7B layout (an empty memory of its shapes: STAR memories are fixed-size buffers).

Ray's own start (~4 s) is left out of every figure. Prints markdown tables; `--json PATH` writes them too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..commands.arguments import POSITIVE, real
from .report import markdown_table

SECTIONS = ("capacity", "throughput", "recovery", "bytes")
SUSTAINED_SHARE = 0.98  # of the offered frames ingested during the window
SUSTAINED_BACKLOG = 2  # frames waiting in any one stream at the end of the window
LIVE_FILE = "live.mp4"  # 1 fps, played at speed 1 by the capacity trials and at speed 4 by the recovery runs
FAST_FILE = "fast.mp4"  # 1 fps, read as fast as it decodes by the throughput runs
RECOVERY_SPEED = 4.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="demo", help="demo (default), tiny, or a checkpoint folder")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run")
    parser.add_argument("--start-streams", type=POSITIVE, default=8, help="first capacity trial (default 8)")
    parser.add_argument("--max-streams", type=POSITIVE, default=512, help="largest capacity trial (default 512)")
    parser.add_argument("--window", type=real(1.0), default=15.0, help="seconds counted per capacity trial")
    parser.add_argument("--streams", type=POSITIVE, default=4, help="files read at once for throughput (default 4)")
    parser.add_argument("--seconds", type=real(1.0), default=10.0, help="seconds counted for throughput")
    parser.add_argument("--ks", type=POSITIVE, nargs="+", default=[5, 20, 50], help="checkpoint intervals K")
    parser.add_argument("--kills", type=POSITIVE, default=3, help="owner processes killed per K (default 3)")
    parser.add_argument("--json", help="also write the results to this JSON file")


# -- one cluster at a time on one local Ray --------------------------------------------------------------------------


@contextlib.contextmanager
def running_cluster(args, media: Path, hosts: int, checkpoint_every: int, streams_per_host: int):
    """An httpx client of a fresh cluster (its own empty store) on the Ray this process started; every cluster of
    a run on `args.port` (Serve keeps the HTTP options of its first start)."""
    import httpx

    from ..cluster.runtime import start_cluster
    from ..cluster.settings import ClusterSettings

    with tempfile.TemporaryDirectory(prefix="flash-vstream-store-") as store:
        settings = ClusterSettings(
            model=args.model, store=store, hosts=hosts, streams_per_host=streams_per_host,
            checkpoint_every=checkpoint_every, media_root=str(media), port=args.port,
        )  # fmt: skip
        runtime = start_cluster(settings)
        try:
            with httpx.Client(base_url=runtime.url, timeout=300) as client:
                yield runtime, client
        finally:
            runtime.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _frames_by_stream(runtime) -> dict[str, int]:
    """Every stream's frames seen, from its host (what the registry's health check reads)."""
    import ray

    pings = ray.get([host.ping.remote() for host in runtime.hosts.values()])
    return {sid: info["frames"] for ping in pings for sid, info in ping["streams"].items()}


def _open_streams(client, bodies: list[dict]) -> None:
    def create(body: dict) -> None:
        response = client.post("/v1/streams", json=body)
        if response.status_code != 201:
            raise RuntimeError(f"POST /v1/streams {body}: {response.status_code} {response.text}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, bodies))


def _close_streams(client, stream_ids: list[str]) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda sid: client.delete(f"/v1/streams/{sid}"), stream_ids))


def _wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout:.0f} s")
        time.sleep(0.1)
    return value


# -- capacity -------------------------------------------------------------------------------------------------------


def capacity_trial(runtime, client, streams: int, window: float) -> dict:
    """`streams` live-paced 1 fps streams on one host: frames offered and ingested during `window` seconds, counted
    once the host has caught up with the frames that queued while the streams opened (at most 60 s)."""
    import ray

    ids = [f"live-{streams}-{index}" for index in range(streams)]
    host = next(iter(runtime.hosts.values()))

    def worst_backlog() -> int:
        return max(status["backlog"] for status in ray.get([host.status.remote(sid) for sid in ids]))

    _open_streams(client, [{"source": LIVE_FILE, "stream_id": sid, "speed": 1.0, "fps": 1.0} for sid in ids])
    try:
        _wait(lambda: min(_frames_by_stream(runtime).values()) >= 2, 120, f"frames in all {streams} streams")
        with contextlib.suppress(TimeoutError):  # not caught up: the window below shows it
            _wait(lambda: worst_backlog() <= SUSTAINED_BACKLOG, 60, "no backlog")
        began, before = time.monotonic(), _frames_by_stream(runtime)
        time.sleep(window)
        elapsed, after = time.monotonic() - began, _frames_by_stream(runtime)
        backlog = worst_backlog()
    finally:
        _close_streams(client, ids)
    ingested = sum(after[sid] - before[sid] for sid in ids)
    offered = streams * elapsed  # 1 frame per second per stream
    share = ingested / offered
    return {
        "streams": streams, "seconds": elapsed, "offered_fps": offered / elapsed, "ingested_fps": ingested / elapsed,
        "share": share, "max_backlog": backlog,
        "sustained": share >= SUSTAINED_SHARE and backlog <= SUSTAINED_BACKLOG,
    }  # fmt: skip


def measure_capacity(args, media: Path, log) -> dict:
    """The capacity trials on one host (a cluster of one, room for `--max-streams` streams)."""
    with running_cluster(args, media, 1, 20, args.max_streams) as (runtime, client):
        return search_capacity(lambda n: capacity_trial(runtime, client, n, args.window), args.start_streams,
                               args.max_streams, log)  # fmt: skip


def search_capacity(trial: Callable[[int], dict], start: int, maximum: int, log) -> dict:
    """`trial(n)` from `start`, doubling up to `maximum` until a count is not sustained, then one bisection step
    between the last count sustained and that one; the largest count sustained."""
    rows: list[dict] = []
    count = start
    while count <= maximum:
        log(f"capacity: {count} streams at 1 fps ...")
        rows.append(trial(count))
        if not rows[-1]["sustained"]:
            break
        count *= 2
    sustained = [row["streams"] for row in rows if row["sustained"]]
    if sustained and not rows[-1]["sustained"]:
        middle = (sustained[-1] + rows[-1]["streams"]) // 2
        if middle not in (sustained[-1], rows[-1]["streams"]):
            log(f"capacity: {middle} streams at 1 fps ...")
            rows.append(trial(middle))
    sustained = [row["streams"] for row in rows if row["sustained"]]
    return {"trials": rows, "sustained": max(sustained, default=0),
            "limited_by_trials": all(row["sustained"] for row in rows)}  # fmt: skip


# -- throughput -----------------------------------------------------------------------------------------------------


def measure_throughput(args, media: Path, log) -> list[dict]:
    """Frames/s from `--streams` files read as fast as they decode, with 1 and with 2 hosts."""
    rows = []
    for hosts in (1, 2):
        log(f"throughput: {args.streams} streams on {hosts} host(s) ...")
        with running_cluster(args, media, hosts, 20, args.streams) as (runtime, client):
            ids = [f"fast-{index}" for index in range(args.streams)]
            _open_streams(client, [{"source": FAST_FILE, "stream_id": sid, "fps": 1.0} for sid in ids])
            _wait(lambda: len(f := _frames_by_stream(runtime)) == len(ids) and min(f.values()) >= 20, 120, "frames")
            began, before = time.monotonic(), sum(_frames_by_stream(runtime).values())
            time.sleep(args.seconds)
            elapsed, after = time.monotonic() - began, sum(_frames_by_stream(runtime).values())
            states = [client.get(f"/v1/streams/{sid}").json() for sid in ids]
            finished = [state["stream_id"] for state in states if state["stream_state"] != "running"]
            if finished:
                raise RuntimeError(f"{finished} ended inside the window: make {FAST_FILE} longer")
            placement = [state["host"] for state in states]
            _close_streams(client, ids)
        rows.append({"hosts": hosts, "streams": args.streams, "seconds": elapsed,
                     "frames_per_s": (after - before) / elapsed, "streams_per_host": _per_host(placement)})  # fmt: skip
    rows[1]["speedup"] = rows[1]["frames_per_s"] / rows[0]["frames_per_s"]
    return rows


def _per_host(placement: list[str]) -> list[int]:
    return sorted((placement.count(host) for host in set(placement)), reverse=True)


# -- recovery -------------------------------------------------------------------------------------------------------


def measure_recovery(args, media: Path, log) -> list[dict]:
    """Per K: kills of the stream's owner process, the seconds to the next answer and the frames not checkpointed."""
    chance, rows = random.Random(0), []
    for k in args.ks:
        log(f"recovery: K = {k}, {args.kills} kills ...")
        with running_cluster(args, media, 1, k, 2) as (runtime, client):
            _open_streams(client, [{"source": LIVE_FILE, "stream_id": "kill", "speed": RECOVERY_SPEED}])
            kills = []
            for _ in range(args.kills):
                state = client.get("/v1/streams/kill").json()
                target = state["frames_seen"] + k + chance.randrange(k)  # a uniform phase between checkpoints
                state = _wait(lambda t=target: (s := _stream(client)).get("frames_seen", 0) >= t and s, 120, "frames")
                killed_at = time.monotonic()
                os.kill(state["owner"]["pid"], signal.SIGKILL)
                _wait(lambda: _answers(client), 180, "an answer after the kill")
                recovered = time.monotonic() - killed_at
                after = _stream(client)
                kills.append({"seconds": recovered, "frames_seen_at_kill": state["frames_seen"],
                              "not_checkpointed": after["frames_replayed"] - sum(x["not_checkpointed"] for x in kills),
                              "restarts": after["restarts"]})  # fmt: skip
        rows.append({
            "k": k, "kills": kills, "median_seconds": statistics.median(x["seconds"] for x in kills),
            "max_seconds": max(x["seconds"] for x in kills),
            "mean_not_checkpointed": statistics.mean(x["not_checkpointed"] for x in kills),
            "max_not_checkpointed": max(x["not_checkpointed"] for x in kills),
        })  # fmt: skip
    return rows


def _stream(client) -> dict:
    response = client.get("/v1/streams/kill")
    return response.json() if response.status_code == 200 else {}


def _answers(client) -> bool:
    response = client.post("/v1/streams/kill/ask", json={"question": "what is there", "max_new_tokens": 1})
    return response.status_code == 200


# -- checkpoint bytes -----------------------------------------------------------------------------------------------


def measure_checkpoint_bytes() -> list[dict]:
    """Memory file + checkpoint.json bytes per stream: tiny and demo models (empty and after a stream longer than
    every buffer), and the released 7B layout from its shapes (fp16)."""
    import torch

    from ..benchmarks.common import released_layout
    from ..cluster.checkpoints import Checkpoint, memory_to_bytes
    from ..modeling.memory_flash_vstream import FlashVStreamMemory
    from ..modeling.star_memory import empty_state
    from ..synthetic.checkpoint import demo_model
    from ..tiny import tiny_model

    checkpoint = Checkpoint("streams/0123456789ab/memory-100000.safetensors", 100_000, 99_999.0, time.time())
    record = len(json.dumps(checkpoint.to_dict(), indent=1, sort_keys=True))  # as CheckpointStore.write_json
    rows = []
    for name, model in (("tiny (random weights)", tiny_model().eval()), ("demo", demo_model()[0])):
        memory = model.new_memory(1)
        empty = len(memory_to_bytes(memory))
        frames = 4 * model.star_layout.temporal_length + model.star_layout.abstract_length + 1
        features = torch.randn(1, frames, model.star_layout.spatial_tokens, model.config.vision_config.hidden_size)
        with torch.no_grad():
            full = model.update_memory_from_features(features.to(model.dtype), memory)
        rows.append({"model": name, "memory_tokens": full.get_seq_length(), "frames": frames,
                     "empty_bytes": empty, "bytes": len(memory_to_bytes(full)), "checkpoint_json": record})  # fmt: skip
    _, layout = released_layout("released")
    memory = FlashVStreamMemory(layout, empty_state(layout, 1, "cpu", torch.float16))
    rows.append({"model": "released 7B layout (fp16, from shapes)", "memory_tokens": layout.num_tokens(10**6),
                 "frames": None, "empty_bytes": len(memory_to_bytes(memory)), "bytes": None,
                 "checkpoint_json": record})  # fmt: skip
    return rows


# -- the run --------------------------------------------------------------------------------------------------------


def write_media(folder: Path, args) -> None:
    from ..tiny import write_synthetic_video

    # Long enough that no live stream ends while trials open (the largest count opens ~1 stream per 10 ms) and
    # that the fast streams outlast the throughput window at several hundred frames/s.
    write_synthetic_video(folder / LIVE_FILE, num_frames=600, fps=1.0)
    write_synthetic_video(folder / FAST_FILE, num_frames=int(400 * args.seconds), fps=1.0)


def tables(results: dict) -> str:
    parts = []
    if "capacity" in results:
        capacity = results["capacity"]
        rows = [[r["streams"], f"{r['offered_fps']:.1f}", f"{r['ingested_fps']:.1f}", f"{r['share']:.1%}",
                 r["max_backlog"], "yes" if r["sustained"] else "no"] for r in capacity["trials"]]  # fmt: skip
        headers = ["streams at 1 fps", "offered frames/s", "ingested frames/s", "ingested share", "max backlog",
                   "sustained"]  # fmt: skip
        more = " (the largest count tried)" if capacity["limited_by_trials"] else ""
        parts += [markdown_table(headers, rows, text_columns=0),
                  f"One host sustains {capacity['sustained']} streams at 1 fps{more}."]  # fmt: skip
    if "throughput" in results:
        rows = [[r["hosts"], r["streams"], r["streams_per_host"], f"{r['frames_per_s']:.0f}",
                 f"{r['speedup']:.2f}x" if "speedup" in r else None] for r in results["throughput"]]  # fmt: skip
        parts.append(markdown_table(["hosts", "streams", "streams per host", "frames/s", "speed-up"], rows, 0))
    if "recovery" in results:
        rows = [[r["k"], len(r["kills"]), f"{r['median_seconds']:.1f} / {r['max_seconds']:.1f}",
                 f"{r['mean_not_checkpointed']:.1f} / {r['max_not_checkpointed']}"] for r in results["recovery"]]
        headers = ["K", "kills", "recovery s (median / max)", "frames not checkpointed (mean / max)"]
        parts.append(markdown_table(headers, rows, text_columns=0))
    if "bytes" in results:
        rows = [[r["model"], r["memory_tokens"], f"{r['empty_bytes']:,} B",
                 "(fixed-size)" if r["bytes"] is None else f"{r['bytes']:,} B ({r['frames']} frames)",
                 f"{r['checkpoint_json']} B"] for r in results["bytes"]]  # fmt: skip
        headers = ["model", "memory tokens", "memory file, empty", "after a long stream", "checkpoint.json"]
        parts.append(markdown_table(headers, rows))
    return "\n\n".join(parts)


def run(args: argparse.Namespace, log=print) -> dict:
    from .common import load_average

    results: dict = {"settings": {k: v for k, v in vars(args).items() if k != "json"}, "cpus": os.cpu_count(),
                     "load_average_start": load_average()}  # fmt: skip
    started = time.perf_counter()
    if "bytes" in args.only:
        results["bytes"] = measure_checkpoint_bytes()
    ray_sections = [name for name in args.only if name != "bytes"]
    if ray_sections:
        import ray

        from ..cluster.settings import NAMESPACE

        with tempfile.TemporaryDirectory(prefix="flash-vstream-media-") as folder:
            write_media(Path(folder), args)
            args.port = _free_port()
            ray.init(num_cpus=2, namespace=NAMESPACE, include_dashboard=False, logging_level="WARNING",
                     log_to_driver=False)  # fmt: skip
            try:
                measures = {"capacity": measure_capacity, "throughput": measure_throughput,
                            "recovery": measure_recovery}  # fmt: skip
                for name in ray_sections:
                    results[name] = measures[name](args, Path(folder), log)
            finally:
                from ray import serve

                serve.shutdown()
                ray.shutdown()
    results["seconds"], results["load_average_end"] = time.perf_counter() - started, load_average()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flash_vstream_hf.benchmarks.cluster", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    results = run(args)
    print(f"Cluster benchmark, model {args.model}, {results['cpus']} CPU(s), {results['seconds']:.0f} s, load average "
          f"{results['load_average_start']} at the start, {results['load_average_end']} at the end\n")
    print(tables(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
