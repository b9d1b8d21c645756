"""Flash-VStream-7B in 4 bits on a consumer GPU, watching a video in real time.

    python examples/gpu_4bit.py video.mp4 --model path/to/converted-flash-vstream-7b
    python examples/gpu_4bit.py video.mp4 --model tiny --device cpu --speed 0     # smoke test, no GPU needed

The LLM's linear layers are stored in NF4 (bitsandbytes); the vision tower, the memory's attention, the
projector and the LM head stay in bf16, since every answer depends on them and they are small. The video plays
at `--speed` times real time while a question is asked every `--every` seconds of wall-clock time.
"""

import argparse
import tempfile

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig

from flash_vstream_hf import StreamingSession

QUANTIZATION = BitsAndBytesConfig(
    load_in_4bit=True,
    bnb_4bit_quant_type="nf4",
    bnb_4bit_compute_dtype=torch.bfloat16,
    bnb_4bit_use_double_quant=True,
)  # only the language model is quantized: Flash-VStream's from_pretrained keeps the video side in bf16


def load(model_id: str, device: str):
    if model_id == "tiny":  # quantize the tiny random model through a saved copy, as bitsandbytes loads it
        from flash_vstream_hf.tiny import tiny_model, tiny_processor

        with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as folder:
            tiny_model().save_pretrained(folder)
            model = AutoModelForImageTextToText.from_pretrained(
                folder, quantization_config=QUANTIZATION, device_map=device
            )
        return model, tiny_processor()
    model = AutoModelForImageTextToText.from_pretrained(
        model_id, quantization_config=QUANTIZATION, dtype=torch.bfloat16, device_map=device
    )
    return model, AutoProcessor.from_pretrained(model_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video")
    parser.add_argument("--model", required=True, help="converted checkpoint folder or Hub id, or 'tiny'")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--question", default="What is happening in the video?")
    parser.add_argument("--speed", type=float, default=1.0, help="multiple of real time; 0: as fast as possible")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between questions")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA GPU found; use --device cpu for a (slow) smoke test")

    model, processor = load(args.model, args.device)
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    print(f"weights in memory: {weights:.2f} GiB")
    with StreamingSession(model, processor, generation_kwargs={"max_new_tokens": args.max_new_tokens}) as session:
        session.start(args.video, speed=args.speed or None)
        session.wait_for_frames(1)
        while True:
            answer = session.ask(args.question)
            print(f"[stream {answer.stream_time:6.1f} s, {answer.frames} frames] {answer.text}\n"
                  f"    first token {answer.time_to_first_token:.2f} s, answer {answer.latency:.2f} s")  # fmt: skip
            if not session.running:
                break
            session.wait(args.every)
        print(session.status().line())
    if torch.cuda.is_available() and args.device.startswith("cuda"):
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
