"""The trained demo: a held-out synthetic stream played through `StreamingSession`, questions asked as it goes.

The session ingests the stream in its background thread (frame by frame into the STAR memory); each question
reads the memory snapshot taken exactly when its frame arrived (`session.snapshot_at`), so the printout is the
same however fast the machine is.
"""

from __future__ import annotations

import random
from collections import defaultdict

from .questions import FAMILIES, Question, QuestionMaker, ask
from .world import COLOUR_NAMES, SHAPES, SyntheticStream

DEMO_SEED = 4242  # a held-out stream: training uses seeds >= 1,000,000, evaluation seeds 0..n-1


def demo_questions(stream: SyntheticStream, seconds: int, seed: int) -> dict[int, list[Question]]:
    """One question of each family at about a dozen moments of the stream (`{frame: [questions]}`)."""
    maker, rng = QuestionMaker(stream), random.Random(f"demo-{seed}")
    moments = sorted({min(seconds - 1, round(seconds * k / 12)) for k in range(1, 13)} | {seconds - 1})
    planned = {}
    for t in moments:
        questions = [q for family in FAMILIES if (q := ask(maker, family, t, rng)) is not None]
        if questions:
            planned[t] = questions
    return planned


def last_seen(stream: SyntheticStream, question: Question) -> str:
    """For a long-range question: when its colour or shape was last on screen (the context the mark lacks)."""
    word = next((w for w in question.text.split() if w in COLOUR_NAMES or w in SHAPES), None)
    if question.kind == "long_longest" or word is None:
        return ""
    for t in range(question.time, -1, -1):
        if any(word in pair for pair in stream.objects_at(t)):
            return f"  ({word} last on screen {question.time - t} s before)"
    return f"  ({word} never on screen)"


def play(model, processor, seconds: int = 600, seed: int = DEMO_SEED, out=print) -> dict[str, tuple[int, int]]:
    """Play `seconds` frames of stream `seed` at 1 fps (as fast as ingest goes), print every question with the
    model's answer, the truth and a mark, and return `{family: (right, asked)}`."""
    from ..streaming import StreamingSession

    stream = SyntheticStream(seed, size=model.config.vision_config.image_size)
    planned = demo_questions(stream, seconds, seed)
    score: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    kwargs = {"max_new_tokens": 2, "do_sample": False}
    with StreamingSession(model, processor, generation_kwargs=kwargs) as session:
        futures = {t: session.snapshot_at(float(t)) for t in planned}  # frame t is stamped t seconds (1 fps)
        session.start((stream.frame(t) for t in range(seconds)), fps=1.0, speed=None)
        for t, questions in planned.items():
            snapshot = futures[t].result(timeout=120)
            for q in questions:
                answer = session.ask(q.text, snapshot=snapshot)
                word = (answer.text.split() or [""])[0]
                right = word == q.answer
                score[q.family][0] += right
                score[q.family][1] += 1
                context = last_seen(stream, q) if q.family == "long-range" else ""
                out(
                    f"t={t:4d}s  {'OK ' if right else 'XX '} [{q.family:>10}] {q.text + '?':<50} "
                    f"answer: {word:<8} truth: {q.answer:<8}{context}"
                )
        session.wait(timeout=120)
        out("session: " + session.status().line())
    right = sum(r for r, _ in score.values())
    asked = sum(n for _, n in score.values())
    parts = ", ".join(f"{family} {score[family][0]}/{score[family][1]}" for family in FAMILIES if family in score)
    out(f"\nscore: {right}/{asked} ({100 * right / max(1, asked):.0f}%): {parts}")
    return {family: tuple(value) for family, value in score.items()}
