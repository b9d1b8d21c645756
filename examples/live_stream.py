"""Watch a webcam or a network stream and ask about it every few seconds.

    python examples/live_stream.py /dev/video0 --model path/to/converted-flash-vstream-7b          # Linux webcam
    python examples/live_stream.py 0 --input-format avfoundation --model ...                         # macOS webcam
    python examples/live_stream.py rtsp://192.168.1.10:554/stream --model ... --option rtsp_transport=tcp
    python examples/live_stream.py http://127.0.0.1:8000/stream.mkv --model tiny --every 2 --duration 10

Anything FFmpeg (PyAV) can open works. Frames are sampled at `--fps`; when the model falls behind, the oldest
waiting frames are dropped (and counted) so the memory stays close to "now".
"""

import argparse
import time

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from flash_vstream_hf.streaming import LiveSource, NoFramesError, StreamingSession


def load(model_id: str):
    if model_id == "tiny":  # built on the spot, random weights: shows the pipeline, not the quality
        from flash_vstream_hf.tiny import tiny_model, tiny_processor

        return tiny_model(), tiny_processor()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForImageTextToText.from_pretrained(model_id, dtype="auto", device_map=device)
    return model, AutoProcessor.from_pretrained(model_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="camera device, or an rtsp/http/udp/... URL")
    parser.add_argument("--model", required=True, help="converted checkpoint folder or Hub id, or 'tiny'")
    parser.add_argument(
        "--input-format", help="FFmpeg input format: v4l2 (default for /dev/video*), avfoundation, dshow"
    )
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="FFmpeg input option")
    parser.add_argument("--question", default="What is happening right now?")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between questions")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds to watch")
    parser.add_argument("--fps", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    model, processor = load(args.model)
    fmt = args.input_format or ("v4l2" if args.input.startswith("/dev/video") else None)
    source = LiveSource(args.input, fps=args.fps, format=fmt, options=dict(o.split("=", 1) for o in args.option))
    with StreamingSession(model, processor, generation_kwargs={"max_new_tokens": args.max_new_tokens}) as session:
        session.start(source)  # raises ConnectionError at once if the input cannot be opened
        deadline = time.monotonic() + args.duration
        while time.monotonic() < deadline and session.running:
            time.sleep(min(args.every, max(0.0, deadline - time.monotonic())))
            try:
                answer = session.ask(args.question)
            except NoFramesError:
                print("(no frame yet)")
                continue
            print(f"[stream {answer.stream_time:7.1f} s] {answer.text}   ({answer.latency:.2f} s)")
            print("    " + session.status().line())
        print("final: " + session.status().line())


if __name__ == "__main__":
    main()
