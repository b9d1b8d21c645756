"""`flash-vstream bench` / `python -m flash_vstream_hf.benchmarks`: run the benchmark suite, print markdown tables, write JSON."""

from __future__ import annotations

import argparse
import os
import time

from ..commands.arguments import POSITIVE, real
from .sizes import MEMORY_LAYOUTS

SECTIONS = ("update", "ttft", "ingest")
DTYPES = ("float32", "float16", "bfloat16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="CI sizes: seconds, every code path, figures meaningless")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run")
    parser.add_argument("--json", help="where to write the results (default benchmark-results/bench-<sizes>.json)")
    parser.add_argument(
        "--from-json", metavar="PATH", help="measure nothing: print the tables and targets of a saved results file"
    )
    parser.add_argument(
        "--threads", type=POSITIVE, default=os.cpu_count() or 1,
        help="torch intra-op threads for the vision tower and the language model (default: all cores)",
    )  # fmt: skip
    parser.add_argument(
        "--memory-threads", type=POSITIVE, default=1,
        help="torch intra-op threads for memory-only work: update cost, building memories (default 1: its ops are "
        "too small to gain from more, and lose badly when other processes share the cores)",
    )  # fmt: skip
    parser.add_argument("--memory-dtype", choices=DTYPES, default="float32", help="STAR memory dtype (default float32)")
    parser.add_argument(
        "--memory-layout", choices=MEMORY_LAYOUTS, default="released",
        help="memory layout of the update-cost section: the released model's (default) or the tiny test model's "
        "(targets are evaluated for the released one only)",
    )  # fmt: skip
    parser.add_argument(
        "--llm-layers", type=POSITIVE, help="decoder layers of the language model (overrides the sizes)"
    )
    parser.add_argument(
        "--original-max-gb", type=real(0.0, low_inclusive=False), default=6.0,
        help="skip released-algorithm sizes whose [T, K, F] k-means tensors need more than this (default 6 GiB)",
    )  # fmt: skip


def _log(message: str) -> None:
    from .progress import log  # between the progress bars of the steps

    log(message)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    from pathlib import Path

    import torch

    from . import report
    from .common import load_average, torch_threads
    from .ingest import measure_ingest
    from .machine import machine_info
    from .models import bench_model
    from .sizes import FULL, QUICK
    from .ttft import measure_ttft
    from .update_cost import measure_update_cost

    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
        results["targets"] = report.evaluate_targets(results, evaluate=results["sizes"] == "full")
        print(report.render(results))
        return 0

    sizes = QUICK if args.quick else FULL
    if args.llm_layers:
        sizes = dataclasses.replace(sizes, llm={**sizes.llm, "num_hidden_layers": args.llm_layers})
    json_path = args.json or os.path.join("benchmark-results", f"bench-{sizes.name}.json")
    started = time.perf_counter()
    settings = {name: value for name, value in vars(args).items() if name not in ("run", "command", "from_json")}

    with torch_threads(args.threads):
        results: dict = {
            "suite": "flash-vstream-hf benchmarks",
            "sizes": sizes.name,
            "settings": {**settings, "sizes": dataclasses.asdict(sizes)},
            "machine": machine_info(args.threads, quick=args.quick),
        }
        print(report.header(results) + "\n", flush=True)
        if "update" in args.only:
            _log("update cost and peak RSS ...")
            results["update"] = measure_update_cost(
                sizes,
                args.memory_threads,
                getattr(torch, args.memory_dtype),
                int(args.original_max_gb * 2**30),
                _log,
                args.memory_layout,
            )
            print(report.section("update", results) + "\n", flush=True)
        if "ttft" in args.only or "ingest" in args.only:
            _log("building the model ...")
            model = bench_model(sizes)
            if "ttft" in args.only:
                _log("time to first token ...")
                results["ttft"] = measure_ttft(model, sizes, args.memory_threads, _log)
                print(report.section("ttft", results) + "\n", flush=True)
            if "ingest" in args.only:
                _log("ingest ...")
                results["ingest"] = measure_ingest(model, sizes, args.threads, args.memory_threads, _log)
                print(report.section("ingest", results) + "\n", flush=True)
        results["targets"] = report.evaluate_targets(results, evaluate=sizes.name == "full")
        results["machine"]["load_average_end"] = load_average()
        results["seconds"] = round(time.perf_counter() - started, 1)
        print(report.footer(results))
        path = report.write_json(results, json_path)
        print(
            f"Ran in {results['seconds']:.0f} s; load average at end {results['machine']['load_average_end']}; "
            f"results in {path}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flash_vstream_hf.benchmarks", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
