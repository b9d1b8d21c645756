"""Training the demo model from scratch on synthetic streams, through the streaming STAR memory.

Every step plays a batch of short streams frame by frame into a memory with `model.add_frame_features` (the
grad-enabled frame handler; `update_memory_from_features` is the same under `torch.no_grad`), asks questions at two moments
of the stream from memory snapshots, and backpropagates the answer loss of `forward(..., video_memory=...,
labels=...)` into the language model, the projector, the abstract-memory attention and, through the memory (the
k-means centroids, the retrieved key frames, the abstract update are all differentiable in the features), the
vision tower. Frames enter one at a time exactly as at inference, since a memory fed frame by frame is not the
one an offline pass over the same frames gives (streaming k-means re-clusters at every frame).

Tricks, and why (the defaults of `TrainSettings` are the shipped checkpoint's recipe, one run of
`flash-vstream train-demo`; "earlier checkpoint" below is the one it replaced, trained in four stages):
- A grounding loss (`grounding_weight`, see `grounding.py`) next to the answer loss: the projected frame token
  must point at the word embeddings of the colours and shapes it shows. Without it the model learnt to name
  the colour of a named shape (97%) but not to say whether a named colour is there (71% on "is there a red shape
  now"); adding it to the earlier checkpoint took that question to 100%. `perception_steps` runs it alone on
  single frames first (ten steps a second); from scratch with 1,500 of them, presence was still not learnt after
  1,500 answer steps, so the recipe does not use them.
- A first stage of short clips (8 frames) with only *now* and *recent* questions: from scratch, the vision tower
  must first learn to see colours and shapes, and questions it cannot answer yet (long-range ones) only add
  noise; the short clips make these steps four times cheaper.
- A peak learning rate of 1e-3: at 2e-3 the model stayed at the answer priors for hundreds of steps (the vision
  tower's features moved too fast for the language model to latch on), at 1e-3 it starts answering from the
  frames within ~200 steps.
- Short training clips (24 to 64 frames, a curriculum from the shortest): the memory is a fixed 72 tokens
  whatever the length and a step costs time linear in the clip length.
- A sped-up prefix before 30% of the clips (`prefix_share`, see `stream_prefix`): 64 to 512 frames played 1 to
  16 seconds apart, without gradients. Short clips alone do not carry to long streams: after 64 frames the
  32 temporal centroids are still single frames, after 10,000 each one averages hundreds of frames from dozens
  of scenes. The same recipe without the prefix scored long-range 85.0% at 500 frames and 72.8% at 10,000
  ("did a red shape appear" 97% and 84%, and 96% at 10,000 without the retrieved key frames: the model misread
  what a long stream's largest clusters look like); with it, 86.7% and 83.2%. It costs 50% more time per step.
  A prefix before 50% of the clips went too far: long-range 91.2% at 500 frames but 79.7% at 10,000, and *now*
  and *recent* lost 6 and 9 points.
- A presence probe (`presence_weight`, see `presence_probe.py`): a training-only loss on the language model's
  first layer at the asked word of "did X appear". The memory holds the answer (a max-cosine read-out of the
  temporal tokens separates yes from no with an AUC of 0.98), but through the answer loss alone the earlier
  checkpoint stayed at chance on long-range questions for 4,100 steps, and a fourth stage weighted 60% to them
  reached 54% training accuracy after 850 steps. With the probe, the same stage went from chance to 78% between
  steps 600 and 750, and held-out long-range at 2,000 frames from 47.8% to 87.9%.
- Hard negatives for "is there a X shape now" (`hard_negative_share`, see `QuestionMaker.now_present`): its "no"
  answers name a colour the stream showed before wherever one exists. Drawn from every absent colour, 3 of the 4 or
  5 lie outside the stream's palette and the memory alone rules them out; the previous checkpoint, trained so,
  answered 94.9% of *now* questions at 2,000 frames, 9 of its 13 errors a "yes" to a palette colour no longer on
  screen. With every "no" hard (1.0): 98.8%, and that template from 95.9% to 99.5%. On a validation set (seeds
  500,000-500,015) a share of 0.5 scored now 97.7 / long-range 83.2 at 2,000 frames, 1.0 scored 98.8 / 87.3; the
  reported held-out set did not pick between them.
- Three memory layouts share the weights (`spec.with_layout`), 70% STAR and 15% each ablation, so the ablations
  in the evaluation are the same model reading another memory, not a model that never saw such a memory.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .batches import pixel_values, question_batch
from .grounding import GroundingHead, frame_labels, grounded_word_ids, grounding_loss
from .presence_probe import PresenceProbe, presence_probe_loss
from .questions import FAMILIES, QuestionMaker, ask
from .spec import LAYOUTS, demo_config, demo_processor, with_layout
from .world import SampledStream, SyntheticStream

TRAIN_SEED_BASE = 1_000_000  # training streams use seeds >= this; evaluation and the demo use seeds below it


@dataclass
class TrainSettings:
    seed: int = 0
    steps: int = 3000
    streams_per_step: int = 16
    questions_per_ask: int = 3  # per stream, at each of the two moments asked
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    perception_steps: int = 0  # grounding loss only, on single frames (see grounding.py), before everything else
    perception_frames: int = 16  # frames per stream in a perception step, drawn from its first 300 seconds
    grounding_weight: float = 0.5  # weight of the grounding loss added to the answer loss after perception
    presence_weight: float = 1.0  # weight of the presence-probe loss (see presence_probe.py)
    first_stage_steps: int = 300  # short clips, now/recent questions only (see the module docstring)
    first_stage_length: int = 8
    first_stage_family_weights: dict = field(default_factory=lambda: {"now": 0.6, "recent": 0.4})
    min_length: int = 24  # frames per training stream: grows from min_length to max_length over the curriculum
    max_length: int = 64
    curriculum_fraction: float = 0.3  # share of the steps over which the longest length grows to max_length
    family_weights: dict = field(default_factory=lambda: {"now": 0.3, "recent": 0.2, "long-range": 0.5})
    layout_weights: dict = field(default_factory=lambda: {"star": 0.7, "no-retrieval": 0.15, "recent": 0.15})
    prefix_share: float = 0.3  # share of the later steps whose clips follow a long sped-up prefix (play_prefix)
    prefix_frames: tuple[int, int] = (64, 512)  # frames the prefix plays, log-uniform in this range
    prefix_stride: tuple[int, int] = (1, 16)  # seconds of stream per prefix frame, uniform in this range
    hard_negative_share: float = 1.0  # share of "is there a X shape now" asking a colour seen before (questions.py)
    log_every: int = 25
    save_every: int = 250
    max_minutes: float | None = None  # stop early (and save) after this much wall time
    stop_after: int | None = None  # stop (and save) after this many steps, the schedule still planned for `steps`
    init_from: str | None = None  # start from these weights (a checkpoint `train` saved) instead of random ones
    step_offset: int = 0  # steps done before `init_from`: streams and questions carry on from there, never repeat


def stream_length(settings: TrainSettings, step: int, rng: random.Random) -> int:
    """Length of the streams of `step`: `first_stage_length` in the first stage, then uniform in
    `[min_length, longest]`, where `longest` grows linearly to `max_length` over the first
    `curriculum_fraction` of the later steps (short streams first: they are cheap, and the spatial questions
    they teach are what the rest builds on)."""
    step -= settings.perception_steps
    if step < settings.first_stage_steps:
        return settings.first_stage_length
    step -= settings.first_stage_steps
    later_steps = settings.steps - settings.perception_steps - settings.first_stage_steps
    progress = min(1.0, step / max(1, settings.curriculum_fraction * later_steps))
    longest = round(settings.min_length + progress * (settings.max_length - settings.min_length))
    return rng.randint(settings.min_length, max(settings.min_length, longest))


def stream_prefix(settings: TrainSettings, step: int) -> tuple[int, int]:
    """`(frames, stride)` of the prefix played before the clip of `step`, `(0, 1)` for none: the prefix is what
    makes a training memory look like a long stream's (see `train_step`). Drawn from its own generator, so
    `prefix_share=0` leaves every other draw of a step as it was."""
    rng = random.Random(f"{settings.seed}-prefix-{step}")
    step -= settings.perception_steps
    if step < settings.first_stage_steps or rng.random() >= settings.prefix_share:
        return 0, 1
    low, high = settings.prefix_frames
    frames = round(math.exp(rng.uniform(math.log(low), math.log(high))))
    return frames, rng.randint(*settings.prefix_stride)


@torch.no_grad()
def play_prefix(variant, streams: list[SyntheticStream], prefix: int, stride: int, length: int):
    """Play `prefix` frames `stride` seconds apart into a fresh memory of `variant`, without gradients, and return
    the streams as `SampledStream`s (the prefix, then `length` contiguous frames of the clip) with that memory;
    `(streams, None)` for no prefix. Why a prefix: see the module docstring. The clip after it still trains the
    vision tower through the memory."""
    if not prefix:
        return streams, None
    times = [*range(0, prefix * stride, stride), *range(prefix * stride, prefix * stride + length)]
    streams = [SampledStream(stream, times) for stream in streams]
    features = variant.get_frame_features(pixel_values(np.stack([s.frames(0, prefix) for s in streams])))
    memory = None
    for t in range(prefix):
        memory = variant.add_frame_features(features[:, t : t + 1], memory)
    return streams, memory


def draw_questions(maker: QuestionMaker, t: int, count: int, weights: dict, rng: random.Random) -> list:
    """`count` questions at frame `t`, families drawn by `weights`."""
    questions = []
    while len(questions) < count:
        family = rng.choices(list(weights), weights=list(weights.values()))[0]
        # A family with no question defined at t (long-range before frame 18) falls back to `now`; `now_count` is
        # defined at every frame, the last resort when `ask` draws an undefined template eight times in a row.
        questions.append(ask(maker, family, t, rng) or ask(maker, "now", t, rng) or maker.now_count(t, rng))
    return questions


def training_streams(settings: TrainSettings, step: int) -> list[SyntheticStream]:
    """The streams of `step`: seeds `TRAIN_SEED_BASE + step * streams_per_step + i`, never used twice."""
    first = TRAIN_SEED_BASE + step * settings.streams_per_step
    return [SyntheticStream(seed) for seed in range(first, first + settings.streams_per_step)]


def perception_step(model, head: GroundingHead, settings: TrainSettings, step: int) -> dict:
    """One grounding-only step on `perception_frames` random single frames of every stream of `step`."""
    rng = random.Random(f"{settings.seed}-perception-{step}")
    streams = training_streams(settings, step)
    times = [[rng.randrange(300) for _ in range(settings.perception_frames)] for _ in streams]
    frames = np.stack([np.stack([s.frame(t) for t in ts]) for s, ts in zip(streams, times)])
    labels = torch.stack([frame_labels(s, ts) for s, ts in zip(streams, times)])  # [B, F, 9]
    features = model.get_frame_features(pixel_values(frames))  # [B, F, P_spa^2, D]
    loss, grounded = grounding_loss(head, model, features, labels)
    loss.backward()
    return {"loss": float(loss.detach()), "layout": "star", "length": 1, "grounded": grounded}


def train_step(model, variants: dict, processor, settings: TrainSettings, step: int, head=None, probe=None) -> dict:
    """One step: returns the loss and the answer accuracy per family on this batch (and, with a grounding
    `head` and a `grounding_weight`, the share of frames whose 9 grounded words are all right). With a presence
    `probe` and a `presence_weight`, its loss joins the answer loss."""
    if step < settings.perception_steps:
        return perception_step(model, head, settings, step)
    rng = random.Random(f"{settings.seed}-{step}")
    layout = rng.choices(list(settings.layout_weights), weights=list(settings.layout_weights.values()))[0]
    variant = variants[layout]
    length = stream_length(settings, step, rng)
    first_stage = step - settings.perception_steps < settings.first_stage_steps
    weights = settings.first_stage_family_weights if first_stage else settings.family_weights
    if first_stage:
        layout, variant = "star", variants["star"]
    prefix, stride = stream_prefix(settings, step)
    streams, memory = play_prefix(variant, training_streams(settings, step), prefix, stride, length)
    makers = [QuestionMaker(stream, hard_negative_share=settings.hard_negative_share) for stream in streams]
    pixels = pixel_values(np.stack([s.frames(prefix, prefix + length) for s in streams]))
    # frame indices questions are asked at
    ask_at = sorted({prefix + rng.randint(length // 2, length - 2), prefix + length - 1})
    # The vision tower runs once over all frames (it sees each frame on its own, so this equals encoding them one
    # by one, at a third of the cost); the memory then takes them one at a time, as `encode_videos` (the
    # grad-enabled frame handler) adds each frame of a stream.
    features = variant.get_frame_features(pixels)  # [B, T, P_spa^2, D]
    losses, probe_losses, hits = [], [], {family: [] for family in FAMILIES}
    probing = probe is not None and settings.presence_weight > 0
    word_ids = torch.tensor(grounded_word_ids())  # what the probe looks for
    for t in range(prefix, prefix + length):
        memory = variant.add_frame_features(features[:, t - prefix : t - prefix + 1], memory)
        if t not in ask_at:
            continue
        questions = [
            q for m in makers for q in draw_questions(m, t, settings.questions_per_ask, weights, rng)
        ]  # stream-major: a memory of B streams serves the B * questions_per_ask rows in order
        batch = question_batch(processor, questions, memory.get_seq_length(), with_answers=True)
        out = variant(**batch, video_memory=memory.snapshot(), output_hidden_states=probing)
        losses.append(out.loss)
        if probing:
            probe_loss = presence_probe_loss(probe, out.hidden_states, batch["input_ids"], questions, word_ids)
            if probe_loss is not None:
                probe_losses.append(probe_loss)
        predicted = out.logits[:, -3].argmax(-1)  # the position whose next token is the answer word
        for question, guess, truth in zip(questions, predicted.tolist(), batch["labels"][:, -2].tolist()):
            hits[question.family].append(guess == truth)
    loss = torch.stack(losses).mean()
    if probe_losses:
        loss = loss + settings.presence_weight * torch.stack(probe_losses).mean()
    result = {"layout": layout, "length": length, "prefix": prefix, **{f: hits[f] for f in FAMILIES}}
    if head is not None and settings.grounding_weight > 0:
        labels = torch.stack([frame_labels(s, range(prefix, prefix + length)) for s in streams])
        grounding, result["grounded"] = grounding_loss(head, model, features, labels)
        loss = loss + settings.grounding_weight * grounding
    loss.backward()
    return {"loss": float(loss.detach()), **result}


def train(settings: TrainSettings, output_dir: str | Path, log_path: str | Path | None = None):
    """Train a fresh demo model; save it (and its processor) to `output_dir` every `save_every` steps and at
    the end. Returns `(model, processor)`."""
    from transformers.utils.logging import tqdm

    from ..modeling import FlashVStreamForConditionalGeneration

    torch.manual_seed(settings.seed)
    config = demo_config()
    if settings.init_from:
        model = FlashVStreamForConditionalGeneration.from_pretrained(settings.init_from).train()
    else:
        model = FlashVStreamForConditionalGeneration(config).train()
    processor = demo_processor(config)
    variants = {layout: with_layout(model, layout) for layout in LAYOUTS}
    head = GroundingHead(grounded_word_ids())
    probe = PresenceProbe(model.config.text_config.hidden_size)
    parameters = [*model.parameters(), *head.parameters(), *probe.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=settings.learning_rate, weight_decay=settings.weight_decay)

    def schedule(step: int) -> float:  # linear warm-up, cosine decay to 10%
        if step < settings.warmup_steps:
            return (step + 1) / settings.warmup_steps
        progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
        return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    log = open(log_path, "a") if log_path else None
    start, window = time.perf_counter(), []
    bar = tqdm(range(settings.steps), desc="train-demo", unit="step")
    for step in bar:
        result = train_step(model, variants, processor, settings, settings.step_offset + step, head, probe)
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        window.append(result)
        if (step + 1) % settings.log_every == 0 or step + 1 == settings.steps:
            record = summarise(window, step + 1, time.perf_counter() - start, scheduler.get_last_lr()[0])
            bar.set_postfix(loss=f"{record['loss']:.3f}", **{f[:4]: f"{record[f]:.2f}" for f in FAMILIES})
            if log:
                log.write(json.dumps(record) + "\n")
                log.flush()
            window = []
        if (step + 1) % settings.save_every == 0:
            save(model, processor, output_dir, settings, step + 1, time.perf_counter() - start)
        if settings.stop_after is not None and step + 1 >= settings.stop_after:
            break
        if settings.max_minutes is not None and time.perf_counter() - start > 60 * settings.max_minutes:
            bar.write(f"time limit of {settings.max_minutes} min reached after {step + 1} steps")
            break
    save(model, processor, output_dir, settings, step + 1, time.perf_counter() - start)
    if log:
        log.close()
    return model.eval(), processor


def summarise(window: list[dict], step: int, elapsed: float, lr: float) -> dict:
    record = {"step": step, "elapsed_s": round(elapsed, 1), "lr": lr}
    record["loss"] = sum(r["loss"] for r in window) / len(window)
    for family in FAMILIES:
        hits = [h for r in window for h in r.get(family, [])]
        record[family] = sum(hits) / max(1, len(hits))
    grounded = [r["grounded"] for r in window if "grounded" in r]
    if grounded:
        record["grounded"] = sum(grounded) / len(grounded)
    record["mean_length"] = sum(r["length"] for r in window) / len(window)
    return record


def save(model, processor, output_dir: str | Path, settings: TrainSettings, steps: int, elapsed: float) -> None:
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    info = {"settings": asdict(settings), "steps_done": steps, "train_seconds": round(elapsed, 1)}
    (output_dir / "training.json").write_text(json.dumps(info, indent=2) + "\n")
