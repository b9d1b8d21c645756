"""Ask a question about a whole video file, offline: one `generate()` call, no streaming.

    python examples/offline_qa.py video.mp4 "What happens in this video?" --model path/to/converted-flash-vstream-7b
    python examples/offline_qa.py video.mp4 "What happens?" --model tiny     # tiny random model: gibberish answers

Frames are sampled at `--fps` by timestamp and the STAR memory is built from all of them in one call, exactly
as the released model does it offline.
"""

import argparse

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

import flash_vstream_hf  # noqa: F401  (registers the Auto classes)


def load(model_id: str):
    if model_id == "tiny":  # built on the spot, random weights: shows the pipeline, not the quality
        from flash_vstream_hf.tiny import tiny_model, tiny_processor

        return tiny_model(), tiny_processor()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForImageTextToText.from_pretrained(model_id, dtype="auto", device_map=device)
    return model, AutoProcessor.from_pretrained(model_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video")
    parser.add_argument("question")
    parser.add_argument("--model", required=True, help="converted checkpoint folder or Hub id, or 'tiny'")
    parser.add_argument("--fps", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()

    model, processor = load(args.model)
    conversation = [
        {"role": "user", "content": [{"type": "video", "path": args.video}, {"type": "text", "text": args.question}]}
    ]
    inputs = processor.apply_chat_template(
        conversation, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
        processor_kwargs={"fps": args.fps},
    ).to(model.device)  # fmt: skip
    output = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
    frames = inputs["pixel_values_videos"].shape[1]
    print(f"{frames} frames -> {int((inputs['input_ids'] == processor.video_token_id).sum())} memory tokens")
    print(processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip())


if __name__ == "__main__":
    main()
