"""One benchmark question (`EvalItem`), a problem reported instead of an answer (`Problem`), and what a loader
returns (`LoadResult`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# How a question is scored: "choice" by option likelihood and by the generated letter, "yes_no" and "short" by
# normalised exact match, "open" by a judge (and exact match, shown for reference only).
KINDS = ("choice", "yes_no", "short", "open")


@dataclass(frozen=True)
class EvalItem:
    """A question about a video, asked when the stream reaches `timestamp` seconds (`None`: after the whole video).

    `reference` is the expected answer (the letter for a multiple-choice question, whose `options` are the option
    texts without their letters); `type` groups questions in the summary (VStream-QA's `answer_type`,
    StreamingBench's `task_type`, OVO-Bench's `task`).
    """

    id: str
    video: str
    question: str
    reference: str
    type: str
    kind: str
    timestamp: float | None
    options: tuple[str, ...] = ()
    start_time: float | None = None  # start of the annotated evidence, when the format has one (kept as metadata)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "choice" and not self.options:
            raise ValueError(f"multiple-choice item {self.id} has no options")


@dataclass(frozen=True)
class Problem:
    """Something that kept an item from being answered or scored as the benchmark intends, with the item's id.

    `stage`: "annotation" (a malformed entry), "video" (missing or unreadable video or frame folder), "timestamp"
    (asked past the video's end, or before its first frame), "stream" (the video failed while decoding), "frames"
    (unreadable frames skipped: the answer saw fewer frames), "answer" (the model failed), "judge" (no valid
    verdict after the retries).
    """

    id: str | None
    stage: str
    message: str
    video: str | None = None

    def line(self) -> str:
        where = f"{self.id}" if self.id is not None else (self.video or "-")
        return f"{self.stage}: {where}: {self.message}"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LoadResult:
    """Items of an annotation file, the entries that could not be read (`problems`), and the entries left out on
    purpose (`excluded`: e.g. OVO-Bench's forward active-responding tasks, which are not multiple choice)."""

    items: list[EvalItem] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
