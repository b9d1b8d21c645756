"""Questions about a `SyntheticStream`, each asked at a frame, with its one-word answer and its family.

A question asked at frame `t` is asked once frames `0..t` are in memory (`t + 1` frames). Answers are single
words, so accuracy is the exact match of the first generated word. Three families, designed around what each
part of the STAR memory keeps:

- **now**: what is on screen at frame `t` ("what colour is the circle now", "how many shapes are there now",
  "is there a red shape now"). Relies on the *spatial* memory: the newest frame is always its last entry, at full
  (spatial-pool) resolution.
- **recent**: what was on screen 1 to 3 seconds ago ("what colour was the square two seconds ago", "was there a
  blue shape three seconds ago"). Still the *spatial* memory: its `N_spa = 4` frames are the last four seconds,
  oldest first, so "k seconds ago" is a fixed position. Half of them are drawn, where the last seconds allow
  it, so that the answer differs from what is on screen now; scenes last seconds to tens of seconds, so in all
  about a quarter differ, and the newest frame alone answers about three quarters of them.
- **long-range**: about frames older than `long_range_window` frames (the recent window a plain "most recent
  frames" memory of the same token budget holds), never about anything in that window:
  - "did a red shape appear" / "did a triangle appear": asked only about a colour or shape absent from the last
    `long_range_window` frames; yes if it was on screen before, no if never (half each). A stream's palette
    colours and shapes keep coming back (see `world.py`), so every one of them holds a sizeable share of frames
    and keeps *temporal* centroids of its own (weighted k-means puts centroids where the frames are; a colour
    never seen has none), and the *abstract* memory mixes it in too. What STAR cannot keep is a one-off event
    in a long stream (five frames out of 10,000 get merged into a bigger cluster), so no question asks that.
  - "which colour was on screen longest": asked only when that colour is absent from the last
    `long_range_window` frames and leads the runner-up by 25% of frames. Weighted k-means clusters weigh as
    many frames as they stand for, and the *retrieved* key frames are those of the largest clusters, largest
    first; the centroids also cover the dominant content more densely. This is the question the memory without
    retrieval should find hardest.
  Order of events ("which colour came first") and counts ("how many times") are left out on purpose: k-means
  centroids carry no time order and no count, and the abstract memory forgets the start of a long stream at the
  update ratio's exponential rate, so a STAR memory cannot answer them after thousands of frames.

Every generator returns `None` when its question is not well defined at `t` (e.g. no single circle on screen).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .world import COLOUR_NAMES, SHAPES, SyntheticStream

FAMILIES = ("now", "recent", "long-range")
YES_NO = ("yes", "no")
COUNTS = ("zero", "one", "two")
LAGS = {1: "one", 2: "two", 3: "three"}  # "k seconds ago", inside the 4-frame spatial window
LONG_RANGE_WINDOW = 18  # frames a recent-window memory of the demo model's 72-token budget holds (4 tokens each)
LONGEST_MARGIN = 1.25  # the longest colour must lead the runner-up by this factor


@dataclass(frozen=True)
class Question:
    """`text` asked at frame `time` (after frames `0..time`), its one-word `answer`, and the words a guess is
    drawn from (`options`, for the chance level)."""

    text: str
    answer: str
    family: str
    kind: str  # the template, e.g. "now_colour"
    time: int
    options: tuple[str, ...]

    @property
    def chance(self) -> float:
        return 1.0 / len(self.options)


class QuestionMaker:
    """Draws questions about one stream; cheap to query at any frame (ground truth is cached as presence
    arrays, extended as the stream grows)."""

    def __init__(
        self, stream: SyntheticStream, long_range_window: int = LONG_RANGE_WINDOW, hard_negative_share: float = 0.0
    ):
        self.stream = stream
        self.window = long_range_window
        # Training only: the share of "is there a X shape now" whose "no" colour was on screen before (see
        # `now_present`). 0 (evaluation, the demo) draws nothing extra from `rng`, so those questions do not change.
        self.hard_negative_share = hard_negative_share
        self._colours = np.zeros((0, len(COLOUR_NAMES)), dtype=bool)
        self._shapes = np.zeros((0, len(SHAPES)), dtype=bool)
        self._colour_counts = np.zeros((1, len(COLOUR_NAMES)), dtype=np.int64)  # cumulative, row t = frames < t
        self._shape_counts = np.zeros((1, len(SHAPES)), dtype=np.int64)

    def _ensure(self, length: int) -> None:
        have = self._colours.shape[0]
        if length <= have:
            return
        colours, shapes = self.stream.presence(range(have, length))
        self._colours = np.concatenate([self._colours, colours])
        self._shapes = np.concatenate([self._shapes, shapes])
        self._colour_counts = np.concatenate([self._colour_counts, self._colour_counts[-1] + np.cumsum(colours, 0)])
        self._shape_counts = np.concatenate([self._shape_counts, self._shape_counts[-1] + np.cumsum(shapes, 0)])

    def colour_frames(self, start: int, stop: int) -> np.ndarray:
        """Frames of `[start, stop)` showing each colour, `[6]`."""
        self._ensure(stop)
        return self._colour_counts[stop] - self._colour_counts[max(start, 0)]

    def shape_frames(self, start: int, stop: int) -> np.ndarray:
        self._ensure(stop)
        return self._shape_counts[stop] - self._shape_counts[max(start, 0)]

    # -- now ------------------------------------------------------------------------------------------------------

    def now_colour(self, t: int, rng: random.Random) -> Question | None:
        objects = self.stream.objects_at(t)
        single = [s for s in SHAPES if [o[0] for o in objects].count(s) == 1]
        if not single:
            return None
        shape = rng.choice(single)
        colour = next(c for s, c in objects if s == shape)
        return Question(f"what colour is the {shape} now", colour, "now", "now_colour", t, COLOUR_NAMES)

    def now_count(self, t: int, rng: random.Random) -> Question | None:
        count = len(self.stream.objects_at(t))
        return Question("how many shapes are there now", COUNTS[count], "now", "now_count", t, COUNTS)

    def now_present(self, t: int, rng: random.Random) -> Question | None:
        present = {c for _, c in self.stream.objects_at(t)}
        absent = [c for c in COLOUR_NAMES if c not in present]
        # Most absent colours are outside the stream's palette, so the memory alone rules them out; a model trained
        # on those says "yes" to a palette colour that left the screen a few frames ago. A hard negative is a
        # colour seen before `t`: only the newest frame tells it is gone.
        if self.hard_negative_share > 0 and rng.random() < self.hard_negative_share:
            seen = self.colour_frames(0, t)
            absent = [c for c in absent if seen[COLOUR_NAMES.index(c)] > 0] or absent
        colour = self._balanced(rng, sorted(present), absent)
        return Question(f"is there a {colour} shape now", _yes(colour in present), "now", "now_present", t, YES_NO)

    # -- recent ---------------------------------------------------------------------------------------------------

    def recent_colour(self, t: int, rng: random.Random) -> Question | None:
        lag = rng.choice([k for k in LAGS if k <= t] or [0])
        if lag == 0:
            return None
        then, now = self.stream.objects_at(t - lag), self.stream.objects_at(t)
        single = [s for s in SHAPES if [o[0] for o in then].count(s) == 1]
        if rng.random() < 0.5:  # half of them: the shape is gone or has another colour now
            single = [s for s in single if (s, dict(then)[s]) not in now]
        if not single:
            return None
        shape = rng.choice(single)
        text = f"what colour was the {shape} {LAGS[lag]} seconds ago"
        return Question(text, dict(then)[shape], "recent", "recent_colour", t, COLOUR_NAMES)

    def recent_present(self, t: int, rng: random.Random) -> Question | None:
        lag = rng.choice([k for k in LAGS if k <= t] or [0])
        if lag == 0:
            return None
        then = {c for _, c in self.stream.objects_at(t - lag)}
        now = {c for _, c in self.stream.objects_at(t)}
        candidates = list(COLOUR_NAMES)
        if rng.random() < 0.5:  # half of them: the answer differs from the newest frame's
            candidates = [c for c in COLOUR_NAMES if (c in then) != (c in now)]
            if not candidates:
                return None
        colour = self._balanced(rng, [c for c in candidates if c in then], [c for c in candidates if c not in then])
        text = f"was there a {colour} shape {LAGS[lag]} seconds ago"
        return Question(text, _yes(colour in then), "recent", "recent_present", t, YES_NO)

    # -- long-range -----------------------------------------------------------------------------------------------

    def long_colour_seen(self, t: int, rng: random.Random) -> Question | None:
        old_end = t + 1 - self.window  # frames [0, old_end) are older than the window
        if old_end <= 0:
            return None
        recent, old = self.colour_frames(old_end, t + 1), self.colour_frames(0, old_end)
        absent = [c for i, c in enumerate(COLOUR_NAMES) if recent[i] == 0]
        seen = [c for c in absent if old[COLOUR_NAMES.index(c)] > 0]
        never = [c for c in absent if old[COLOUR_NAMES.index(c)] == 0]
        if not seen or not never:  # keep yes/no balanced: ask only where both answers are possible
            return None
        colour = self._balanced(rng, seen, never)
        return Question(f"did a {colour} shape appear", _yes(colour in seen), "long-range", "long_colour", t, YES_NO)

    def long_shape_seen(self, t: int, rng: random.Random) -> Question | None:
        old_end = t + 1 - self.window
        if old_end <= 0:
            return None
        recent, old = self.shape_frames(old_end, t + 1), self.shape_frames(0, old_end)
        absent = [s for i, s in enumerate(SHAPES) if recent[i] == 0]
        seen = [s for s in absent if old[SHAPES.index(s)] > 0]
        never = [s for s in absent if old[SHAPES.index(s)] == 0]
        if not seen:  # streams use 2 of the 3 shapes: "no" is always possible, "yes" only sometimes
            return None
        shape = self._balanced(rng, seen, never) if never else rng.choice(seen)
        return Question(f"did a {shape} appear", _yes(shape in seen), "long-range", "long_shape", t, YES_NO)

    def long_longest(self, t: int, rng: random.Random) -> Question | None:
        old_end = t + 1 - self.window
        if old_end <= 0:
            return None
        total = self.colour_frames(0, t + 1)
        order = np.argsort(-total, kind="stable")
        best, second = int(order[0]), int(order[1])
        if total[best] < LONGEST_MARGIN * total[second] or total[best] == 0:
            return None
        if self.colour_frames(old_end, t + 1)[best] > 0:
            return None
        text = "which colour was on screen longest"
        return Question(text, COLOUR_NAMES[best], "long-range", "long_longest", t, COLOUR_NAMES)

    @staticmethod
    def _balanced(rng: random.Random, yes: list[str], no: list[str]) -> str:
        """A yes-candidate or a no-candidate with probability 1/2 each (whichever exists)."""
        pool = yes if (yes and (not no or rng.random() < 0.5)) else no
        return rng.choice(pool)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


GENERATORS: dict[str, tuple[str, ...]] = {
    "now": ("now_colour", "now_count", "now_present"),
    "recent": ("recent_colour", "recent_present"),
    "long-range": ("long_colour_seen", "long_shape_seen", "long_longest"),
}


def ask(maker: QuestionMaker, family: str, t: int, rng: random.Random, tries: int = 8) -> Question | None:
    """One question of `family` at frame `t`: templates drawn in turn until one is defined (or `None`)."""
    for _ in range(tries):
        generator: Callable = getattr(maker, rng.choice(GENERATORS[family]))
        question = generator(t, rng)
        if question is not None:
            return question
    return None


def vocabulary() -> list[str]:
    """Every word a question or an answer can hold (the demo tokenizer's vocabulary)."""
    words = {"what", "colour", "is", "the", "now", "how", "many", "shapes", "are", "there", "a", "shape", "was"}
    words |= {"seconds", "ago", "did", "appear", "which", "on", "screen", "longest"}
    words |= set(COLOUR_NAMES) | set(SHAPES) | set(YES_NO) | set(COUNTS) | set(LAGS.values())
    return sorted(words)
