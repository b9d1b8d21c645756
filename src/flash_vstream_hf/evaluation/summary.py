"""The summary of a run: one row per question type and one overall, as a markdown table and as JSON.

Columns, each over the questions it applies to (a dash where none): questions, answered, exact match (yes/no
and short answers), multiple choice by likelihood and by the generated letter, the judge's accuracy (its
"yes" share, as the original reported it) and mean score (0-5) for open-ended answers, and the mean time to
first token and latency. Accuracies are over all questions of their kind, a skipped one counting as wrong, so
skipping never raises a score; `answered` says how many there were.
"""

from __future__ import annotations

from collections import defaultdict

from .items import EvalItem

OVERALL = "overall"
COLUMNS = (
    ("questions", "questions"),
    ("answered", "answered"),
    ("exact_match", "exact match"),
    ("choice_likelihood", "MC likelihood"),
    ("choice_generated", "MC generated"),
    ("judge_accuracy", "judge acc"),
    ("judge_score", "judge score"),
    ("time_to_first_token_s", "TTFT (s)"),
    ("latency_s", "latency (s)"),
)


def _row(items: list[EvalItem], records: dict[str, dict], verdicts: dict[str, dict]) -> dict:
    answered = [records[item.id] for item in items if item.id in records]
    short = [item for item in items if item.kind in ("yes_no", "short")]
    choice = [item for item in items if item.kind == "choice"]
    open_ = [item for item in items if item.kind == "open"]

    def share(group: list[EvalItem], test) -> float | None:
        return sum(1 for item in group if test(item)) / len(group) if group else None

    def mean(values: list) -> float | None:
        values = [value for value in values if value is not None]
        return sum(values) / len(values) if values else None

    def record(item: EvalItem) -> dict:
        return records.get(item.id, {})

    return {
        "questions": len(items),
        "answered": len(answered),
        "exact_match": share(short, lambda item: record(item).get("exact_match") is True),
        "choice_likelihood": share(choice, lambda item: record(item).get("correct_likelihood") is True),
        "choice_generated": share(choice, lambda item: record(item).get("correct_generated") is True),
        "judge_accuracy": share(open_, lambda item: verdicts.get(item.id, {}).get("correct") is True)
        if verdicts
        else None,
        "judge_score": mean([verdicts[item.id]["score"] for item in open_ if item.id in verdicts]),
        "judged": sum(1 for item in open_ if item.id in verdicts),
        "time_to_first_token_s": mean([r.get("time_to_first_token_s") for r in answered]),
        "latency_s": mean([r.get("latency_s") for r in answered]),
    }


def summarise(items: list[EvalItem], records: dict[str, dict], verdicts: dict[str, dict]) -> dict:
    """`{"rows": {type: row, ..., "overall": row}}` for the items of a benchmark."""
    by_type: dict[str, list[EvalItem]] = defaultdict(list)
    for item in items:
        by_type[item.type].append(item)
    rows = {name: _row(group, records, verdicts) for name, group in sorted(by_type.items())}
    rows[OVERALL] = _row(items, records, verdicts)
    return {"rows": rows}


def _cell(key: str, value) -> str:
    if value is None:
        return "—"
    if key in ("questions", "answered"):
        return str(value)
    if key == "judge_score":
        return f"{value:.2f}"
    if key.endswith("_s"):
        return f"{value:.3f}"
    return f"{100 * value:.1f}"


def format_table(summary: dict) -> str:
    """The rows as a markdown table (accuracies in %)."""
    header = "| type | " + " | ".join(title for _, title in COLUMNS) + " |"
    lines = [header, "|:---|" + "---:|" * len(COLUMNS)]
    for name, row in summary["rows"].items():
        cells = " | ".join(_cell(key, row[key]) for key, _ in COLUMNS)
        lines.append(f"| {'**overall**' if name == OVERALL else name} | {cells} |")
    return "\n".join(lines)
