"""How well the memory itself answers "did X appear": `python -m flash_vstream_hf.synthetic.readout`.

For every long-range presence question (a colour or shape absent from the last `LONG_RANGE_WINDOW` frames), the
read-out is the largest cosine similarity between the projected tokens of one memory segment and the asked word's
input embedding; the printed figure is the AUC of that score for "yes" against "no" (0.5: no information, 1: the
segment alone answers). It tells the memory's share of a failure from the language model's: on the checkpoint of
the third training stage the temporal segment scored an AUC of 0.985 for colours while the model answered at
chance, which is what the presence probe (`presence_probe.py`) was built on.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch.nn import functional as F

from .batches import pixel_values
from .questions import LONG_RANGE_WINDOW, QuestionMaker
from .spec import word_vocabulary
from .world import COLOUR_NAMES, SHAPES, SyntheticStream

SEGMENTS = ("abstract", "temporal", "retrieved", "current")  # the order of `star_memory.read_out`


def segment_sizes(config) -> dict[str, int]:
    """Tokens of each segment of a full memory (the stream longer than `spatial_length + temporal_length`)."""
    return {
        "abstract": config.abstract_length * config.abstract_pool_size**2,
        "temporal": config.temporal_length * config.temporal_pool_size**2,
        "retrieved": config.retrieved_length * config.spatial_pool_size**2,
        "current": config.spatial_length * config.spatial_pool_size**2,
    }


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: the chance that a "yes" scores above a "no" (ties count half)."""
    yes, no = scores[labels], scores[~labels]
    if not len(yes) or not len(no):
        raise ValueError(f"an AUC needs both answers: {len(yes)} yes and {len(no)} no; play longer or more streams")
    return float((yes[:, None] > no[None, :]).mean() + 0.5 * (yes[:, None] == no[None, :]).mean())


@torch.no_grad()
def readout_auc(model, length: int = 500, streams: int = 16, every: int = 20) -> dict[str, dict[str, float]]:
    """`{"colour" | "shape": {segment: AUC}}` over held-out streams (seeds `0..streams-1`) played to `length`
    frames, asked every `every` frames from frame 40 on (when every segment is full)."""
    model.eval()
    vocabulary = word_vocabulary()
    embeddings = model.get_input_embeddings().weight
    words = {"colour": COLOUR_NAMES, "shape": SHAPES}
    word_vectors = {
        kind: F.normalize(embeddings[[vocabulary[w] for w in names]], dim=-1) for kind, names in words.items()
    }
    sizes = segment_sizes(model.config)
    starts = dict(zip(SEGMENTS, np.cumsum([0, *sizes.values()]).tolist()))
    world = [SyntheticStream(seed) for seed in range(streams)]
    makers = [QuestionMaker(stream) for stream in world]
    scores = {kind: {segment: [] for segment in SEGMENTS} for kind in words}
    labels = {kind: [] for kind in words}
    memory = None
    for t in range(length):
        memory = model.update_memory(pixel_values(np.stack([s.frame(t) for s in world]))[:, None], memory)
        if t < 40 or t % every:
            continue
        tokens = F.normalize(model.project_memory(memory), dim=-1)  # [B, N, D_text]
        old_end = t + 1 - LONG_RANGE_WINDOW
        for kind, vectors in word_vectors.items():
            similarity = tokens @ vectors.T  # [B, N, words]
            for row, maker in enumerate(makers):
                frames = maker.colour_frames if kind == "colour" else maker.shape_frames
                recent, old = frames(old_end, t + 1), frames(0, old_end)
                for word in np.flatnonzero(recent == 0):  # asked only about words absent from the recent window
                    labels[kind].append(old[word] > 0)
                    for segment, start in starts.items():
                        window = similarity[row, start : start + sizes[segment], word]
                        scores[kind][segment].append(float(window.max()))
    return {
        kind: {segment: auc(np.array(scores[kind][segment]), np.array(labels[kind])) for segment in SEGMENTS}
        for kind in words
    }


def main(argv: list[str] | None = None) -> int:
    from .checkpoint import demo_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="a folder train-demo wrote (default: the shipped one)")
    parser.add_argument("--length", type=int, default=500, help="frames per stream")
    parser.add_argument("--streams", type=int, default=16)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, _ = demo_model(args.checkpoint)
    result = readout_auc(model, args.length, args.streams)
    print(f"AUC of the max-cosine read-out, {args.streams} held-out streams x {args.length} frames:")
    print(f"{'segment':>10}  {'colour':>6}  {'shape':>6}")
    for segment in SEGMENTS:
        print(f"{segment:>10}  {result['colour'][segment]:6.3f}  {result['shape'][segment]:6.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
