"""A procedurally drawn, endless, seeded video stream with its ground-truth timeline.

A stream is a sequence of *scenes* of varied duration (3 to 40 frames, log-uniform). A scene has a dark
background and zero, one or two coloured shapes; each shape enters at some frame of the scene, moves in a straight
line (bouncing off the borders), may change colour once, and may leave before the scene ends. Frames are drawn at
any square resolution (the demo model uses 32 px), one frame per second of stream time, so frame `t` is "second
`t`" in the questions.

Every stream draws a *palette* once: 3 of the 6 colours, with unequal weights (about 55% / 28% / 17% of the
shapes), and 2 of the 3 shapes (about 60% / 40%). The palette is what makes long-range questions meaningful at
any stream length: a palette colour keeps coming back for the whole stream, a colour outside it never appears,
and the dominant colour stays dominant however long the stream runs (see `questions.py` for why this is what a
STAR memory can keep).

Everything is a pure function of the seed: `SyntheticStream(seed)` draws scenes lazily from one generator, so the
first `n` frames are the same whatever length is asked for later, and pixel noise is seeded per frame.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 220, 50),
    "purple": (165, 60, 205),
    "white": (235, 235, 235),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
# Dark, desaturated backgrounds: never confusable with a shape colour.
BACKGROUNDS: tuple[tuple[int, int, int], ...] = ((20, 20, 24), (58, 42, 26), (22, 38, 62), (48, 48, 48))
PALETTE_WEIGHTS = (0.55, 0.28, 0.17)  # shares of the 3 palette colours among the shapes drawn
SHAPE_WEIGHTS = (0.6, 0.4)  # shares of the 2 shapes a stream uses
MIN_SCENE, MAX_SCENE = 3, 40  # scene durations in frames (log-uniform)


@dataclass(frozen=True)
class Track:
    """One shape on screen from frame `start` (inclusive) to `end` (exclusive).

    It moves from `(x0, y0)` (fractions of the frame side) at `velocity` (fractions per frame), bouncing off the
    borders, and wears `colour` until `change_at`, then `new_colour` (no change when `change_at` is None).
    """

    shape: str
    colour: str
    start: int
    end: int
    x0: float
    y0: float
    vx: float
    vy: float
    change_at: int | None = None
    new_colour: str | None = None

    def visible(self, t: int) -> bool:
        return self.start <= t < self.end

    def colour_at(self, t: int) -> str:
        return self.new_colour if self.change_at is not None and t >= self.change_at else self.colour

    def position(self, t: int) -> tuple[float, float]:
        """Centre at frame `t` as fractions of the side, in [0.25, 0.75] (a triangle wave: bounces)."""
        dt = t - self.start
        return _bounce(self.x0 + self.vx * dt), _bounce(self.y0 + self.vy * dt)


@dataclass(frozen=True)
class Scene:
    """Frames `[start, end)` over one background with its tracks."""

    start: int
    end: int
    background: int  # index into BACKGROUNDS
    tracks: tuple[Track, ...]


def _bounce(value: float, low: float = 0.25, high: float = 0.75) -> float:
    span = high - low
    phase = (value - low) % (2 * span)
    return low + (phase if phase <= span else 2 * span - phase)


class SyntheticStream:
    """An endless seeded stream: `frame(t)`, `frames(start, stop)` and the ground truth of every frame.

    Args:
        seed: the stream; streams with different seeds are independent.
        size: side of the square frames in pixels.
    """

    def __init__(self, seed: int, size: int = 32):
        self.seed = seed
        self.size = size
        self._rng = np.random.default_rng([seed, 0])
        colours = self._rng.permutation(len(COLOUR_NAMES))[:3]
        self.palette: tuple[str, ...] = tuple(COLOUR_NAMES[i] for i in colours)  # dominant first
        shapes = self._rng.permutation(len(SHAPES))[:2]
        self.shapes: tuple[str, ...] = tuple(SHAPES[i] for i in shapes)  # more frequent first
        self.scenes: list[Scene] = []
        self._finite = False
        self._extend(1)

    @classmethod
    def from_scenes(cls, scenes: list[Scene], seed: int = 0, size: int = 32) -> SyntheticStream:
        """A finite stream made of the given contiguous scenes (hand-built cases for tests and examples)."""
        stream = cls(seed, size)
        stream.scenes, stream._finite = list(scenes), True
        colours = {c for scene in scenes for t in scene.tracks for c in (t.colour, t.new_colour) if c}
        stream.palette = tuple(sorted(colours))
        stream.shapes = tuple(sorted({t.shape for scene in scenes for t in scene.tracks}))
        return stream

    def __len__(self) -> int:
        """Frames of a finite stream (`from_scenes`); a drawn stream is endless and has no length."""
        if not self._finite:
            raise TypeError("a drawn SyntheticStream is endless")
        return self.scenes[-1].end if self.scenes else 0

    # -- timeline ----------------------------------------------------------------------------------------------

    def _extend(self, length: int) -> None:
        """Draw scenes until the timeline covers frames `[0, length)`."""
        if self._finite:
            if length > len(self):
                raise IndexError(f"frame {length - 1} is past the end of this {len(self)}-frame stream")
            return
        rng = self._rng
        while not self.scenes or self.scenes[-1].end < length:
            start = self.scenes[-1].end if self.scenes else 0
            duration = int(round(math.exp(rng.uniform(math.log(MIN_SCENE), math.log(MAX_SCENE)))))
            count = int(rng.choice(3, p=(0.1, 0.6, 0.3)))
            tracks = tuple(self._track(rng, start, start + duration) for _ in range(count))
            self.scenes.append(Scene(start, start + duration, int(rng.integers(len(BACKGROUNDS))), tracks))

    def _track(self, rng: np.random.Generator, start: int, end: int) -> Track:
        duration = end - start
        # Most shapes are there for the whole scene; some enter late or leave early (at least 2 frames on screen).
        enter = start if rng.random() < 0.6 else start + int(rng.integers(0, max(1, duration // 3)))
        leave = end if rng.random() < 0.6 else end - int(rng.integers(0, max(1, duration // 3)))
        leave = max(leave, min(end, enter + 2))
        colour = self.palette[int(rng.choice(3, p=PALETTE_WEIGHTS))]
        change_at, new_colour = None, None
        if rng.random() < 0.15 and leave - enter >= 6:
            change_at = int(rng.integers(enter + 2, leave - 2))
            new_colour = self.palette[int(rng.choice([i for i in range(3) if self.palette[i] != colour]))]
        speed = rng.uniform(0.01, 0.05)
        angle = rng.uniform(0, 2 * math.pi)
        return Track(
            shape=self.shapes[int(rng.choice(2, p=SHAPE_WEIGHTS))],
            colour=colour,
            start=enter,
            end=leave,
            x0=float(rng.uniform(0.25, 0.75)),
            y0=float(rng.uniform(0.25, 0.75)),
            vx=speed * math.cos(angle),
            vy=speed * math.sin(angle),
            change_at=change_at,
            new_colour=new_colour,
        )

    def scene_at(self, t: int) -> Scene:
        if t < 0:
            raise IndexError(f"frame {t} is before the stream starts")
        self._extend(t + 1)
        low, high = 0, len(self.scenes) - 1
        while low < high:  # binary search: scenes are sorted and contiguous
            mid = (low + high) // 2
            if self.scenes[mid].end <= t:
                low = mid + 1
            else:
                high = mid
        return self.scenes[low]

    def objects_at(self, t: int) -> list[tuple[str, str]]:
        """Ground truth of frame `t`: `(shape, colour)` of every shape on screen, in drawing order."""
        return [(track.shape, track.colour_at(t)) for track in self.scene_at(t).tracks if track.visible(t)]

    def presence(self, times: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
        """Per-frame ground truth of the frames `times` (`T` of them): colours `[T, 6]` and shapes `[T, 3]`, bool,
        in `COLOUR_NAMES` / `SHAPES` order."""
        times = list(times)
        colours = np.zeros((len(times), len(COLOUR_NAMES)), dtype=bool)
        shapes = np.zeros((len(times), len(SHAPES)), dtype=bool)
        for row, t in enumerate(times):
            for shape, colour in self.objects_at(t):
                colours[row, COLOUR_NAMES.index(colour)] = True
                shapes[row, SHAPES.index(shape)] = True
        return colours, shapes

    # -- pixels ------------------------------------------------------------------------------------------------

    def frame(self, t: int) -> np.ndarray:
        """Frame `t` as `[size, size, 3]` uint8 RGB."""
        scene = self.scene_at(t)
        # Sensor noise: one of 64 fixed noise images, picked by a fixed mix of (seed, t), so any frame is drawn on its
        # own, deterministically, without seeding a generator per frame (that was most of the drawing time).
        image = (
            np.array(BACKGROUNDS[scene.background], dtype=np.float32)
            + _noise_bank(self.size)[(self.seed * 2654435761 + t * 40503) % _NOISE_BANK]
        )
        for track in scene.tracks:
            if track.visible(t):
                x, y = track.position(t)
                mask = shape_mask(track.shape, x * self.size, y * self.size, 0.2 * self.size, self.size)
                image[mask] = COLOURS[track.colour_at(t)]
        return np.clip(image, 0, 255).astype(np.uint8)

    def frames(self, start: int, stop: int) -> np.ndarray:
        """Frames `[start, stop)` as `[stop - start, size, size, 3]` uint8."""
        return np.stack([self.frame(t) for t in range(start, stop)])


class SampledStream:
    """Frames `times[0], times[1], ...` of `source`, played as frames `0, 1, ...`, with their ground truth.

    Training uses it to put a long stretch of stream time in front of a short clip cheaply: a stride of `s`
    seconds per played frame makes the memory's temporal centroids average as many different scenes as a
    stream `s` times as long does. Questions about a `SampledStream` are about the frames it plays, which are
    what the memory saw. Only what `QuestionMaker`, the grounding labels and the training loop use is here.
    """

    def __init__(self, source: SyntheticStream, times: list[int]):
        if any(b <= a for a, b in zip(times, times[1:])):
            raise ValueError("SampledStream times must be increasing")
        self.source, self.times = source, list(times)
        self.seed, self.size = source.seed, source.size

    def __len__(self) -> int:
        return len(self.times)

    def objects_at(self, t: int) -> list[tuple[str, str]]:
        return self.source.objects_at(self.times[t])

    def presence(self, times: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
        return self.source.presence(self.times[t] for t in times)

    def frame(self, t: int) -> np.ndarray:
        return self.source.frame(self.times[t])

    frames = SyntheticStream.frames  # frames [start, stop) through `frame`


_NOISE_BANK = 64


@lru_cache(maxsize=8)
def _noise_bank(size: int) -> np.ndarray:
    """`[64, size, size, 3]` float32 Gaussian noise (std 6 grey levels), the same in every process."""
    return np.random.default_rng(12345).normal(0.0, 6.0, size=(_NOISE_BANK, size, size, 3)).astype(np.float32)


@lru_cache(maxsize=8)
def _pixel_centres(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    return y, x


def shape_mask(shape: str, cx: float, cy: float, radius: float, size: int) -> np.ndarray:
    """Boolean `[size, size]` mask of `shape` centred at pixel `(cx, cy)`, about `2 * radius` across."""
    y, x = _pixel_centres(size)
    if shape == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= radius**2
    if shape == "square":
        half = radius * 0.85
        return (np.abs(x - cx) <= half) & (np.abs(y - cy) <= half)
    if shape == "triangle":  # apex up; its width grows linearly from the apex to the base
        top, bottom = cy - radius, cy + radius * 0.8
        return (y >= top) & (y <= bottom) & (np.abs(x - cx) <= (y - top) * 0.6)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
