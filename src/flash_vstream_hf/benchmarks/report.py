"""Markdown tables, target checks and the JSON file of a benchmark run."""

from __future__ import annotations

import json
from pathlib import Path

# (name, what is compared, limit) of the targets; `evaluate_targets` measures them.
TARGETS = {
    "update_flat": "STAR update cost per frame at 100,000 frames within 1.2x of 100 frames",
    "ttft_flat": "STAR time to first token within 1.1x between 64 and 16,384 frames",
    "rss_flat": "STAR peak RSS growth from 1,000 to 100,000 frames under 5 MB",
    "consolidation_share": "consolidation under 10% of a frame's ingest time (ViT-L/14 tower, 1 frame per call)",
    "real_time": "real time at 1 fps with the ViT-L/14 tower (sustained frames/s >= 1, 1 frame per call)",
}


def markdown_table(headers: list[str], rows: list[list[object]], text_columns: int = 1) -> str:
    """A GitHub markdown table: the first `text_columns` columns left-aligned, the others right-aligned;
    `None` is shown as an em dash."""

    def cell(value: object) -> str:
        return "—" if value is None else str(value)

    rule = [":---" if i < text_columns else "---:" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(value: float | None, digits: int = 2) -> str | None:
    return None if value is None else f"{value:,.{digits}f}"


def _by(rows: list[dict], method: str, key: str) -> dict[int, object]:
    return {r["frames_seen"]: r.get(key) for r in rows if r["method"] == method}


def _ratio(values: dict[int, float | None], high: int, low: int) -> float | None:
    a, b = values.get(high), values.get(low)
    return a / b if a is not None and b else None


def _within(ratio: float | None, limit: float) -> bool | None:
    """ "Within `limit`x" both ways: 0.5x is as far from flat as 2x."""
    return None if ratio is None else max(ratio, 1 / ratio) <= limit


def _spread(rows: list[dict], method: str, frames: tuple[int, ...], key: str, unit: str) -> str:
    """`"min-max unit at N frames"` from the stored samples of each size (empty for runs without samples)."""
    samples = _by(rows, method, key)
    parts = [f"{min(samples[n]):.3g}-{max(samples[n]):.3g} {unit} at {n:,}" for n in frames if samples.get(n)]
    return f"; samples {', '.join(parts)} frames" if parts else ""


def update_tables(result: dict) -> str:
    rows = result["rows"]
    star, window = _by(rows, "star", "ms_per_frame"), _by(rows, "window", "ms_per_frame")
    static = _by(rows, "star", "static_ms_per_frame")
    original = _by(rows, "original", "ms_per_frame")
    notes = _by(rows, "original", "note")
    frames = sorted(set(star) | set(original))
    cost = markdown_table(
        ["frames seen", "STAR memory (ms/frame)", "STAR, static scene (ms/frame)", "recent window (ms/frame)",
         "released algorithm (ms/frame)"],
        [[f"{n:,}", _fmt(star.get(n)), _fmt(static.get(n)), _fmt(window.get(n), 3),
          _fmt(original.get(n), 1) or notes.get(n)] for n in frames],
    )  # fmt: skip
    peak, state = _by(rows, "star", "peak_rss_mb"), _by(rows, "star", "state_mb")
    original_peak, original_state = _by(rows, "original", "peak_rss_mb"), _by(rows, "original", "state_mb")
    rss = markdown_table(
        ["frames seen", "STAR peak RSS (MB)", "STAR state (MB)", "released peak RSS (MB)", "released buffer (MB)"],
        [[f"{n:,}", _fmt(peak.get(n), 1), _fmt(state.get(n), 1), _fmt(original_peak.get(n), 1),
          _fmt(original_state.get(n), 1)] for n in frames],
    )  # fmt: skip
    peaks = (
        "Linux VmHWM, reset before each method's run"
        if result["peak_rss_per_measurement"]
        else "process-lifetime peaks: VmHWM could not be reset"
    )
    return (
        f"Memory update cost per frame, no vision encoder ({result.get('layout_name', 'released')} memory layout, "
        f"{result['memory_dtype']} memory, "
        f"{result['memory_threads']} thread(s); median of repeats over {result['cycle_frames']} frames)\n\n"
        f"{cost}\n\nPeak RSS vs frames seen ({peaks})\n\n{rss}"
    )


def ttft_table(result: dict) -> str:
    rows = result["rows"]
    seconds = {m: _by(rows, m, "seconds") for m in ("star", "naive", "window")}
    tokens = {m: _by(rows, m, "tokens") for m in ("star", "naive", "window")}
    notes = _by(rows, "naive", "note")
    frames = sorted(seconds["star"])
    table = markdown_table(
        ["frames seen", "STAR tokens", "STAR TTFT (s)", "naive tokens", "naive TTFT (s)", "window tokens",
         "window TTFT (s)"],
        [[f"{n:,}", tokens["star"][n], _fmt(seconds["star"][n]), f"{tokens['naive'][n]:,}",
          _fmt(seconds["naive"][n]) or f"over context ({notes.get(n)})", tokens["window"][n],
          _fmt(seconds["window"][n])] for n in frames],
    )  # fmt: skip
    return (
        f"Time to first token vs frames seen ({result['text_tokens']} text tokens; naive fits at most "
        f"{result['naive_max_frames']} frames in the {result['context_length']:,}-token context; the window "
        f"keeps the last {result['window_frames']} frames)\n\n{table}"
    )


def ingest_table(result: dict, machine: dict) -> str:
    table = markdown_table(
        ["setting", "vision (ms/frame)", "consolidation (ms/frame)", "consolidation share", "frames/s"],
        [[r["setting"], _fmt(r["vision_ms_per_frame"], 0), _fmt(r["memory_ms_per_frame"], 1),
          f"{100 * r['consolidation_share']:.1f}%", _fmt(r["fps"])] for r in result["rows"]],
    )  # fmt: skip
    flops, rate = result["vision_gflop_per_frame"], machine["matmul_gflops_fp32"]
    fastest = min(r["vision_ms_per_frame"] for r in result["rows"]) / 1e3
    return (
        f"Ingest with the ViT-L/14-shaped vision tower ({result['vision_layers']} encoder layers, "
        f"{flops:.0f} GFLOP per frame)\n\n{table}\n\n1 fps needs the vision tower to run at {flops:.0f} GFLOP/s; "
        f"in its fastest setting here it ran at {flops / fastest:.0f} GFLOP/s ({fastest:.2f} s per frame), and a "
        f"plain fp32 matmul measured {rate} GFLOP/s at the start of the run."
    )


def header(results: dict) -> str:
    machine, settings = results["machine"], results["settings"]
    return (
        f"# Flash-VStream benchmarks ({results['sizes']} sizes)\n\n"
        f"Machine: {machine['cpu']}, {machine['cpu_count']} cores, {machine['memory_gib']} GiB; torch "
        f"{machine['torch']}, transformers {machine['transformers']}; {settings['threads']} threads (memory-only "
        f"work: {settings['memory_threads']}); load average at start {machine['load_average_start']}; measured "
        f"matmul {machine['matmul_gflops_fp32']} GFLOP/s fp32, {machine['matmul_gflops_bf16'] or 'not measured'} "
        "GFLOP/s bf16.\n\n"
        f"Shapes: {_memory_shapes(settings.get('memory_layout', 'released'))}, random weights. "
        f"Language model: {settings['sizes']['llm_description']}."
    )


def _memory_shapes(layout_name: str) -> str:
    if layout_name == "tiny":
        return "the tiny test model's features and STAR layout (8x8 patches x 64, 72 tokens) in the update section"
    return "CLIP ViT-L/14 features (16x16 patches x 1024), released STAR layout (681 tokens)"


def section(name: str, results: dict) -> str:
    """The table(s) of one measured section: `update`, `ttft` or `ingest`."""
    if name == "update":
        return update_tables(results["update"])
    if name == "ttft":
        return ttft_table(results["ttft"])
    return ingest_table(results["ingest"], results["machine"])


def footer(results: dict) -> str:
    if not results["targets"]:
        return "Targets: none evaluated (they are set for the released memory layout's full-size run)\n"
    return "Targets\n\n" + targets_table(results["targets"]) + "\n"


def render(results: dict) -> str:
    """The whole report of a saved run, as the run printed it (targets re-evaluated by this code)."""
    parts = [header(results)] + [section(name, results) for name in ("update", "ttft", "ingest") if name in results]
    return "\n\n".join(parts) + "\n\n" + footer(results)


def evaluate_targets(results: dict, evaluate: bool = True) -> list[dict]:
    """Each target with its measured value and whether it is met; `met` is None when this run's sizes cannot
    tell, and for every target when `evaluate` is False (`--quick`: too small to mean anything)."""
    checks = []

    def add(key: str, measured: str | None, met: bool | None, extra: str = "") -> None:
        checks.append({"target": key, "description": TARGETS[key], "measured": measured, "met": met, "detail": extra})

    if "update" in results and results["update"].get("layout_name", "released") == "released":
        rows = results["update"]["rows"]
        star, original = _by(rows, "star", "ms_per_frame"), _by(rows, "original", "ms_per_frame")
        ratio = _ratio(star, 100_000, 100)
        measured_original = sorted(n for n, v in original.items() if v is not None)
        extra = ""
        if len(measured_original) >= 2:
            high, low = measured_original[-1], measured_original[-2]
            extra = f"released algorithm: {_ratio(original, high, low):.1f}x from {low:,} to {high:,} frames"
        extra += _spread(rows, "star", (100, 100_000), "samples_ms", "ms")
        add("update_flat", None if ratio is None else f"{ratio:.2f}x", _within(ratio, 1.2), extra)
        peak = _by(rows, "star", "peak_rss_mb")
        growth = None if peak.get(100_000) is None or peak.get(1_000) is None else peak[100_000] - peak[1_000]
        original_peak = _by(rows, "original", "peak_rss_mb")
        measured_peaks = sorted(n for n, v in original_peak.items() if v is not None)
        extra = ""
        if len(measured_peaks) >= 2:
            high, low = measured_peaks[-1], measured_peaks[-2]
            per_frame = (original_peak[high] - original_peak[low]) / (high - low) * 1024
            extra = f"released algorithm: +{per_frame:,.0f} KB peak RSS per frame from {low:,} to {high:,} frames"
        add("rss_flat", None if growth is None else f"{growth:+.1f} MB", None if growth is None else growth < 5, extra)
    if "ttft" in results:
        rows = results["ttft"]["rows"]
        star, naive = _by(rows, "star", "seconds"), _by(rows, "naive", "seconds")
        ratio = _ratio(star, 16_384, 64)
        naive_max = results["ttft"]["naive_max_frames"]
        naive_ratio = _ratio(naive, naive_max, 16)
        extra = (
            f"naive: {naive_ratio:.1f}x from 16 to {naive_max} frames, over the context from {naive_max + 1} frames"
            if naive_ratio is not None else ""
        )  # fmt: skip
        extra += _spread(rows, "star", (64, 16_384), "samples_s", "s")
        add("ttft_flat", None if ratio is None else f"{ratio:.2f}x", _within(ratio, 1.1), extra)
    if "ingest" in results:
        rows = results["ingest"]["rows"]
        single = [r for r in rows if r["batch"] == 1]
        best = min(single, key=lambda r: r["consolidation_share"])
        others = "; ".join(
            f"{100 * r['consolidation_share']:.1f}% with memory at {r['memory_threads']} thread(s)"
            for r in single if r is not best
        )  # fmt: skip
        add("consolidation_share", f"{100 * best['consolidation_share']:.1f}%", best["consolidation_share"] < 0.10,
            f"{best['setting']}; {others}")  # fmt: skip
        fastest = max(single, key=lambda r: r["fps"])
        batched = "; ".join(
            f"{r['fps']:.2f} frames/s with {r['batch']} queued frames per call" for r in rows if r["batch"] > 1
        )
        add("real_time", f"{fastest['fps']:.2f} frames/s", fastest["fps"] >= 1.0, f"{fastest['setting']}; {batched}")
    if not evaluate:
        for check in checks:
            check["met"] = None
    return checks


def targets_table(checks: list[dict]) -> str:
    status = {True: "met", False: "NOT met", None: "not evaluated at these sizes"}
    return markdown_table(
        ["target", "measured", "status", "for comparison"],
        [[c["description"], c["measured"], status[c["met"]], c["detail"]] for c in checks],
        text_columns=4,
    )


def write_json(results: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path
