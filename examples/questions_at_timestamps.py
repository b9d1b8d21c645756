"""Stream a video file through the STAR memory and ask questions as of given timestamps, in one pass.

    python examples/questions_at_timestamps.py video.mp4 --model path/to/converted-flash-vstream-7b \
        --at 30 "What is the person holding?" --at 1:30 "What changed since then?"
    python examples/questions_at_timestamps.py video.mp4 --model tiny --at 5 "What is moving?"

A `StreamingSession` ingests the file in a background thread; `snapshot_at(t)` hands out the memory holding
exactly the frames stamped up to `t`, and the question is answered from it while ingest goes on. The answer
to the last question is printed as it is generated (`ask_stream`).
"""

import argparse

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from flash_vstream_hf import StreamingSession


def load(model_id: str):
    if model_id == "tiny":  # built on the spot, random weights: shows the pipeline, not the quality
        from flash_vstream_hf.tiny import tiny_model, tiny_processor

        return tiny_model(), tiny_processor()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForImageTextToText.from_pretrained(model_id, dtype="auto", device_map=device)
    return model, AutoProcessor.from_pretrained(model_id)


def seconds(text: str) -> float:
    value = 0.0
    for part in text.split(":"):
        value = value * 60 + float(part)
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video")
    parser.add_argument("--model", required=True, help="converted checkpoint folder or Hub id, or 'tiny'")
    parser.add_argument("--at", nargs=2, action="append", required=True, metavar=("TIME", "QUESTION"))
    parser.add_argument("--fps", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()

    model, processor = load(args.model)
    questions = sorted((seconds(time), question) for time, question in args.at)
    with StreamingSession(model, processor, generation_kwargs={"max_new_tokens": args.max_new_tokens}) as session:
        # Ask for the snapshots before starting, so no timestamp can be passed before it is registered.
        snapshots = [session.snapshot_at(time) for time, _ in questions]
        session.start(args.video, fps=args.fps)  # as fast as possible; speed=1.0 would play it in real time
        for (time, question), snapshot in zip(questions[:-1], snapshots):
            answer = session.ask(question, snapshot=snapshot.result())
            print(f"[{time:7.1f} s] {question}\n    {answer.text}\n    ({answer.frames} frames, "
                  f"first token {answer.time_to_first_token:.2f} s, answer {answer.latency:.2f} s)")  # fmt: skip
        time, question = questions[-1]
        stream = session.ask_stream(question, snapshot=snapshots[-1].result())
        print(f"[{time:7.1f} s] {question}\n    ", end="", flush=True)
        for text in stream:
            print(text, end="", flush=True)
        print(f"\n    ({stream.answer.frames} frames, answer {stream.answer.latency:.2f} s)")
        print(session.status().line())


if __name__ == "__main__":
    main()
