"""Accuracy per question family on held-out synthetic streams, for STAR memory and its ablations.

Streams are played frame by frame into the memory with `update_memory` (as a live stream is), every layout
reading the same frames, and at each checkpoint length `L` questions are asked at frames `L-1, L-6, L-11, L-16`
(the same questions for every layout). An answer is right when the first generated word (greedy: the argmax of
the next-token logits, `<video>` excluded as `generate()` excludes it) is the expected word.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field

import torch

from .batches import answer_words, pixel_values, question_batch
from .questions import FAMILIES, Question, QuestionMaker, ask
from .spec import with_layout
from .world import SyntheticStream

EVAL_SEED_BASE = 0  # held-out streams: seeds 0, 1, ...; training uses seeds >= training.TRAIN_SEED_BASE
LAYOUT_NAMES = {"star": "STAR", "no-retrieval": "no retrieval", "recent": "recent window"}


@dataclass
class Scores:
    """Right answers and questions per (layout, length, family), and the chance level per (length, family)."""

    correct: dict = field(default_factory=lambda: defaultdict(int))
    total: dict = field(default_factory=lambda: defaultdict(int))
    chance_sum: dict = field(default_factory=lambda: defaultdict(float))
    chance_count: dict = field(default_factory=lambda: defaultdict(int))
    # per (layout, template) over every length: right answers, questions, and "yes" answers (a yes/no bias)
    kind_correct: dict = field(default_factory=lambda: defaultdict(int))
    kind_total: dict = field(default_factory=lambda: defaultdict(int))
    kind_yes: dict = field(default_factory=lambda: defaultdict(int))
    # every wrong answer: (layout, stream seed, question, the word answered, the (shape, colour)s on screen then)
    wrong: list = field(default_factory=list)

    def accuracy(self, layout: str, length: int, family: str) -> float:
        return self.correct[layout, length, family] / max(1, self.total[layout, length, family])

    def chance(self, length: int, family: str) -> float:
        return self.chance_sum[length, family] / max(1, self.chance_count[length, family])

    def count(self, length: int, family: str) -> int:
        return self.chance_count[length, family]


def held_out_questions(
    stream: SyntheticStream, lengths: tuple[int, ...], per_family: int, moments: int = 4
) -> dict[int, list[tuple[int, Question]]]:
    """Questions of `stream` by the frame they are asked at: `per_family` of each family at each of `moments`
    frames `L-1, L-6, ...` before every checkpoint length `L`. Returns `{frame: [(length, question), ...]}`."""
    maker = QuestionMaker(stream)
    asked: dict[int, list] = defaultdict(list)
    for length in lengths:
        rng = random.Random(f"eval-{stream.seed}-{length}")
        for k in range(moments):
            t = length - 1 - 5 * k
            for family in FAMILIES:
                for _ in range(per_family):
                    question = ask(maker, family, t, rng)
                    if question is not None:
                        asked[t].append((length, question))
    return asked


@torch.no_grad()
def evaluate(
    model,
    processor,
    lengths: tuple[int, ...] = (100, 500, 2000),
    layouts: tuple[str, ...] = ("star", "no-retrieval", "recent"),
    streams: int = 16,
    per_family: int = 4,
    first_seed: int = EVAL_SEED_BASE,
    progress: bool = True,
) -> Scores:
    """Play `streams` held-out streams (seeds `first_seed...`) to `max(lengths)` frames through every layout's
    memory at once, asking the questions of `held_out_questions` on the way."""
    from transformers.utils.logging import tqdm

    model.eval()
    variants = {layout: with_layout(model, layout).eval() for layout in layouts}
    world = [SyntheticStream(first_seed + i) for i in range(streams)]
    asked = [held_out_questions(stream, tuple(lengths), per_family) for stream in world]
    scores = Scores()
    memories = dict.fromkeys(layouts)
    for t in tqdm(range(max(lengths)), desc="evaluate", unit="frame", disable=not progress):
        pixels = pixel_values(torch.stack([torch.from_numpy(s.frame(t)) for s in world]).numpy()).unsqueeze(1)
        for layout, variant in variants.items():
            memories[layout] = variant.update_memory(pixels, memories[layout])  # [B, 1, 3, H, W]
        rows = [(i, length, q) for i in range(streams) for length, q in asked[i].get(t, [])]
        if not rows:
            continue
        for _, length, q in rows:
            scores.chance_sum[length, q.family] += q.chance
            scores.chance_count[length, q.family] += 1
        for layout, variant in variants.items():
            for i, length, q, word in answer_rows(variant, processor, memories[layout], rows):
                scores.correct[layout, length, q.family] += word == q.answer
                scores.total[layout, length, q.family] += 1
                scores.kind_correct[layout, q.kind] += word == q.answer
                scores.kind_total[layout, q.kind] += 1
                scores.kind_yes[layout, q.kind] += word == "yes"
                if word != q.answer:
                    scores.wrong.append((layout, world[i].seed, q, word, world[i].objects_at(q.time)))
    return scores


def answer_rows(model, processor, memory, rows: list[tuple[int, int, Question]]):
    """Answer `(stream, length, question)` rows from a memory of all streams: yields each row with the word."""
    by_stream = defaultdict(list)
    for row in rows:
        by_stream[row[0]].append(row)
    for stream, stream_rows in by_stream.items():
        sub = memory.snapshot()
        sub.batch_select_indices([stream])
        batch = question_batch(processor, [q for _, _, q in stream_rows], sub.get_seq_length(), with_answers=False)
        logits = model(**batch, video_memory=sub, logits_to_keep=1).logits[:, -1]
        for row, word in zip(stream_rows, answer_words(processor, logits)):
            yield (*row, word)


def format_table(scores: Scores, lengths: tuple[int, ...], layouts: tuple[str, ...]) -> str:
    """A plain-text table: one row per (family, length), one column per layout, then chance and the count."""
    header = ["family", "frames", *(LAYOUT_NAMES.get(layout, layout) for layout in layouts), "chance", "questions"]
    lines = [header]
    for family in FAMILIES:
        for length in lengths:
            accuracies = [f"{100 * scores.accuracy(layout, length, family):.1f}" for layout in layouts]
            chance = f"{100 * scores.chance(length, family):.1f}"
            lines.append([family, str(length), *accuracies, chance, str(scores.count(length, family))])
    return _render(lines)


def format_template_table(scores: Scores, layout: str = "star") -> str:
    """Accuracy and the share of "yes" answers per question template of `layout`, over every length: which
    operation a family's score hides (e.g. naming a colour vs saying whether a named colour is there)."""
    kinds = sorted(kind for (name, kind) in scores.kind_total if name == layout)
    lines = [["template", "accuracy", "says yes", "questions"]]
    for kind in kinds:
        total = scores.kind_total[layout, kind]
        accuracy = 100 * scores.kind_correct[layout, kind] / total
        lines.append([kind, f"{accuracy:.1f}", f"{100 * scores.kind_yes[layout, kind] / total:.1f}", str(total)])
    return _render(lines)


def format_wrong(scores: Scores, layout: str = "star") -> str:
    """`layout`'s wrong answers, one per line, by family, stream and frame: the question, the answer given, the
    truth and what was on screen when it was asked (what a family's score hides, e.g. which colours it confuses)."""
    rows = [row[1:] for row in scores.wrong if row[0] == layout]
    rows.sort(key=lambda row: (FAMILIES.index(row[1].family), row[0], row[1].time))
    lines = [f"{len(rows)} wrong answers of {LAYOUT_NAMES.get(layout, layout)}:"]
    for seed, q, word, screen in rows:
        shown = ", ".join(f"{colour} {shape}" for shape, colour in screen) or "nothing"
        answer = f"{word!r}, truth {q.answer!r} (on screen: {shown})"
        lines.append(f"  stream {seed} frame {q.time} [{q.kind}] {q.text}? {answer}")
    return "\n".join(lines)


def _render(lines: list[list[str]]) -> str:
    """Right-aligned columns, the first row a header underlined with dashes."""
    widths = [max(len(row[i]) for row in lines) for i in range(len(lines[0]))]
    rendered = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in lines]
    rendered.insert(1, "-" * len(rendered[0]))
    return "\n".join(rendered)
