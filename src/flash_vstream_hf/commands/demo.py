"""`flash-vstream demo`: a small *trained* Flash-VStream answering questions about a synthetic stream.

Runs offline on CPU with no download, in well under a minute. By default it loads the checkpoint shipped in the
package (`flash_vstream_hf/demo_model/`, trained by `flash-vstream train-demo`), plays a held-out synthetic
stream through `StreamingSession` and asks questions as it goes, about what is on screen, what was there a few
seconds ago, and what left the screen long ago; each answer is printed next to the truth, then the score.

- `--eval`: accuracy per question family on held-out streams of 100, 500 and 2,000 frames (`--eval-lengths`),
  for STAR memory and for the ablations at the same token budget (a recent window, no retrieval), with chance.
  Then STAR's accuracy and share of "yes" answers per question template; `--show-wrong` lists STAR's wrong
  answers with what was on screen. `--eval-first-seed` evaluates another range of held-out seeds (a validation
  set to compare training recipes on, so that the reported set never picks one).
- `--model tiny`: the former demo, the whole pipeline (file decoding, offline and frame-by-frame paths,
  `StreamingSession`, saving the memory) on a tiny random-weight model, whose answers are gibberish by design.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from .arguments import FPS, NEW_TOKENS, POSITIVE, SEED, integer_list, text

BANNER = (
    "Flash-VStream demo: TINY MODEL WITH RANDOM WEIGHTS, built on the spot (no download, CPU).\n"
    "Its answers are gibberish by design; the demo shows the pipeline, not the quality.\n"
    "For the real model, convert IVGSZ/Flash-VStream-7b (see README) and load it with from_pretrained."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", choices=("trained", "tiny"), default="trained",
        help="trained: the shipped demo model (default); tiny: the pipeline on a random-weight model",
    )  # fmt: skip
    parser.add_argument("--checkpoint", default=None, type=text("checkpoint folder"), help="a folder `train-demo` wrote (default: the shipped one)")
    parser.add_argument("--seconds", type=POSITIVE, default=None, help="length of the stream (default 600 trained, 40 tiny)")
    parser.add_argument("--seed", type=SEED, default=None, help="the held-out stream to play (default 4242)")
    parser.add_argument("--eval", action="store_true", help="print accuracy per family, STAR vs ablations")
    parser.add_argument("--eval-lengths", type=integer_list(1), default="100,500,2000", help="stream lengths evaluated (frames)")
    parser.add_argument("--eval-streams", type=POSITIVE, default=16, help="held-out streams per evaluation")
    parser.add_argument(
        "--eval-first-seed", type=SEED, default=0,
        help="seed of the first held-out stream (default 0; another range is a validation set)",
    )  # fmt: skip
    parser.add_argument("--show-wrong", action="store_true", help="with --eval: list STAR's wrong answers")
    parser.add_argument("--fps", type=FPS, default=1.0, help="tiny model: frames sampled per second (default 1)")
    parser.add_argument("--max-new-tokens", type=NEW_TOKENS, default=12, help="tiny model: tokens per answer")


def check_arguments(args: argparse.Namespace) -> None:
    """What argparse types cannot check alone: held-out seeds never reach the training seeds."""
    from ..synthetic.training import TRAIN_SEED_BASE

    if args.eval_first_seed + args.eval_streams > TRAIN_SEED_BASE:
        raise ValueError(
            f"--eval-first-seed {args.eval_first_seed} with --eval-streams {args.eval_streams}: held-out seeds must "
            f"lie in [0, {TRAIN_SEED_BASE}); seeds from {TRAIN_SEED_BASE} on are training streams"
        )


def run(args: argparse.Namespace) -> int:
    import torch

    if args.model == "tiny":
        return run_tiny(args)
    # The model is tiny: more threads only wait on each other (and the evaluation runs for minutes: one core).
    torch.set_num_threads(1)
    from ..synthetic.checkpoint import demo_model

    model, processor = demo_model(args.checkpoint)
    if args.eval:
        return run_eval(model, processor, args)
    from ..synthetic.live_demo import DEMO_SEED, play

    seconds = args.seconds or 600
    seed = DEMO_SEED if args.seed is None else args.seed
    params = sum(p.numel() for p in model.parameters())
    print(
        f"Flash-VStream demo: a small model TRAINED on synthetic streams ({params / 1e6:.2f} M parameters, "
        f"{model.star_layout.num_tokens(10**9)}-token STAR memory), no download, CPU.\n"
        f"Playing held-out stream {seed} ({seconds} frames at 1 fps) through StreamingSession; questions about "
        "now, the last seconds, and long ago (never about the last 18 s).\n"
    )
    play(model, processor, seconds=seconds, seed=seed)
    return 0


def run_eval(model, processor, args: argparse.Namespace) -> int:
    import time

    from ..synthetic.evaluation import evaluate, format_table, format_template_table, format_wrong

    lengths = args.eval_lengths
    seeds = range(args.eval_first_seed, args.eval_first_seed + args.eval_streams)
    layouts = ("star", "no-retrieval", "recent")
    start = time.perf_counter()
    scores = evaluate(model, processor, lengths, layouts, streams=args.eval_streams, first_seed=seeds.start)
    print(f"accuracy (%) on {args.eval_streams} held-out streams per length (seeds {seeds.start}-{seeds.stop - 1}), "
          f"72-token memories ({time.perf_counter() - start:.0f} s):\n")  # fmt: skip
    print(format_table(scores, lengths, layouts))
    print(f"\nSTAR per question template, all lengths:\n\n{format_template_table(scores)}")
    if args.show_wrong:
        print(f"\n{format_wrong(scores)}")
    return 0


def run_tiny(args: argparse.Namespace) -> int:
    import torch

    from ..tiny import tiny_config, tiny_model, tiny_processor, write_synthetic_video

    args.seconds = args.seconds or 40
    print(BANNER, end="\n\n")
    config = tiny_config()
    model, processor = tiny_model(config), tiny_processor(config)
    question = "What is moving in the video?"

    with tempfile.TemporaryDirectory() as workdir:
        video = write_synthetic_video(Path(workdir) / "synthetic.mp4", num_frames=args.seconds * 10, fps=10)
        print(f"video: {args.seconds} s generated at 10 fps (a white square moving right), sampled at {args.fps} fps")

        # Offline: the whole video through the chat template, one generate() call.
        conversation = [{"role": "user", "content": [{"type": "video", "path": video}, {"type": "text", "text": question}]}]
        start = time.perf_counter()
        inputs = processor.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=True, return_dict=True,
            return_tensors="pt", processor_kwargs={"fps": args.fps},
        )  # fmt: skip
        output = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
        answer = processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        frames = inputs["pixel_values_videos"].shape[1]
        print(f"\n[offline] {frames} frames -> {int((inputs['input_ids'] == processor.video_token_id).sum())} "
              f"memory tokens, answered in {time.perf_counter() - start:.2f} s")
        print(f"  Q: {question}\n  A: {answer!r}")

        # Streaming: frames enter the memory one at a time; questions read a snapshot at any moment.
        print("\n[streaming] frame by frame, asking every 10 frames:")
        memory = None
        for index, frame in enumerate(processor_frames(processor, video, args.fps), start=1):
            memory = model.update_memory(frame, memory)
            if index % 10 == 0:
                snapshot = memory.snapshot()
                prompt = processor.apply_chat_template(
                    [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}],
                    add_generation_prompt=True,
                )
                inputs = processor(text=prompt, num_video_tokens=snapshot.get_seq_length(), return_tensors="pt")
                start = time.perf_counter()
                output = model.generate(**inputs, video_memory=snapshot, max_new_tokens=args.max_new_tokens, do_sample=False)
                answer = processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
                print(f"  t={index / args.fps:5.1f}s frames={snapshot.frames_seen:3d} tokens={snapshot.get_seq_length()} "
                      f"memory={snapshot.nbytes / 1024:.1f} KiB answer in {time.perf_counter() - start:.2f} s: {answer!r}")

        run_session(model, processor, video, question, args)

        saved = Path(workdir) / "memory.safetensors"
        memory.save(saved)
        restored = type(memory).load(saved)
        same = all(torch.equal(a, b) for a, b in zip(memory.state.tensors().values(), restored.state.tensors().values()))
        print(f"\nmemory saved and restored ({saved.stat().st_size / 1024:.1f} KiB on disk, identical: {same})")
    return 0


def run_session(model, processor, video: str, question: str, args: argparse.Namespace) -> None:
    """The real-time runtime: a background thread ingests the video played faster than real time, while
    questions are answered from consistent memory snapshots."""
    from ..streaming import StreamingSession

    speed = 20.0
    print(f"\n[session] StreamingSession: the video played at {speed:g}x real time, ingested in the background, "
          "questions asked meanwhile:")  # fmt: skip
    with StreamingSession(model, processor, generation_kwargs={"max_new_tokens": args.max_new_tokens}) as session:
        session.start(video, fps=args.fps, speed=speed)
        total = int(args.seconds * args.fps)
        for frames in (max(1, total // 4), max(1, total // 2), max(1, 3 * total // 4)):
            session.wait_for_frames(frames, timeout=60)
            answer = session.ask(question, do_sample=False)
            print(f"  stream t={answer.stream_time:5.1f}s frames={answer.frames:3d} tokens={answer.memory_tokens} "
                  f"first token {answer.time_to_first_token:.2f} s, answer {answer.latency:.2f} s: {answer.text!r}")  # fmt: skip
        session.wait(timeout=60)
        print("  status: " + session.status().line())


def processor_frames(processor, video: str, fps: float):
    """Preprocessed frames of `video`, one `[1, 1, 3, H, W]` tensor at a time."""
    import torch

    from ..processing import iter_video_frames

    for frame in iter_video_frames(video, fps=fps):
        pixels = processor.image_processor([frame.image], return_tensors="pt")["pixel_values"]
        yield pixels.unsqueeze(0).to(torch.float32)
