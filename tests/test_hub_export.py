"""`flash-vstream export-hub`: an exported folder loads with `trust_remote_code=True` where flash_vstream_hf cannot
be imported, and its Inference Endpoints handler answers questions about a video at given times."""

import base64
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flash_vstream_hf import FlashVStreamForConditionalGeneration, FlashVStreamProcessor
from flash_vstream_hf.cli import main
from flash_vstream_hf.conversion import convert_checkpoint, export_hub, push_to_hub
from flash_vstream_hf.conversion.handler import _parse_question
from flash_vstream_hf.tiny import synthetic_frame, write_synthetic_video

from .original_layout import build_original_model, write_checkpoint, write_clip_folder

QUESTION = "What happens?"
# greedy, without the 256 byte-fallback ids (a random tiny model favours them, and their text is mostly U+FFFD)
GENERATE = {"max_new_tokens": 6, "do_sample": False, "suppress_tokens": list(range(3, 259)) + list(range(400, 448))}

# Runs in a fresh interpreter where `import flash_vstream_hf` fails, as on a machine without the package.
REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["flash_vstream_hf"] = None
    import json
    import numpy as np
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

    folder, frames_path, request_path = sys.argv[1:4]
    try:
        import flash_vstream_hf
        package_importable = True
    except ImportError:
        package_importable = False
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    base = AutoModel.from_pretrained(folder, trust_remote_code=True)
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    chat = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}]
    prompt = processor.apply_chat_template(chat, add_generation_prompt=True)
    inputs = processor(text=prompt, videos=np.load(frames_path), return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1]

    sys.path.insert(0, folder)
    from handler import EndpointHandler

    handler = EndpointHandler(folder)
    answers = [handler(request) for request in json.load(open(request_path))]
    print(json.dumps({
        "package_importable": package_importable,
        "classes": [type(x).__module__ + "." + type(x).__name__ for x in (config, base, model, processor)],
        "input_ids": inputs["input_ids"][0].tolist(),
        "logits": logits.tolist(),
        "answers": answers,
    }))
    """
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    write_checkpoint(build_original_model(seed=0), root / "original")
    write_clip_folder(root / "clip")
    convert_checkpoint(str(root / "original"), root / "repo", vision_tower=str(root / "clip"), dtype="float32")
    written = export_hub(root / "repo")
    return root, written


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png(frame: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return b64(buffer.getvalue())


@pytest.fixture(scope="module")
def remote(exported):
    """Load and run the exported folder in a subprocess without the package; returns its JSON report."""
    root, _ = exported
    frames = np.stack([synthetic_frame(i) for i in range(5)])
    np.save(root / "frames.npy", frames)
    video = write_synthetic_video(root / "video.mp4", num_frames=30, fps=10.0)  # 3 s
    requests = [
        {"inputs": {"video": b64(Path(video).read_bytes()), "fps": 2.0,
                    "questions": [QUESTION, {"question": QUESTION, "time": 1.0}]}, "parameters": GENERATE},
        {"inputs": {"frames": [png(f) for f in frames], "questions": [{"question": QUESTION, "time": 1.5}]},
         "parameters": GENERATE},
    ]  # fmt: skip
    (root / "requests.json").write_text(json.dumps(requests))
    env = {**os.environ, "HF_HOME": str(root / "hf_home"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, str(root / "repo"), str(root / "frames.npy"), str(root / "requests.json")],
        capture_output=True, text=True, env=env, cwd=root, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def local(exported):
    """The same folder loaded with the package."""
    root, _ = exported
    model = FlashVStreamForConditionalGeneration.from_pretrained(root / "repo").eval()
    return model, FlashVStreamProcessor.from_pretrained(root / "repo")


def test_export_adds_remote_code_auto_map_card_and_handler(exported):
    root, written = exported
    repo = root / "repo"
    for name in ("configuration_flash_vstream.py", "modeling_flash_vstream.py", "star_memory.py",
                 "memory_flash_vstream.py", "processing_flash_vstream.py", "video_io.py", "handler.py", "README.md",
                 "requirements.txt"):  # fmt: skip
        assert (repo / name).is_file() and name in written, name
    auto_map = json.loads((repo / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForImageTextToText", "AutoProcessor"}
    assert json.loads((repo / "processor_config.json").read_text())["auto_map"] == {
        "AutoProcessor": "processing_flash_vstream.FlashVStreamProcessor"
    }
    card = (repo / "README.md").read_text()
    assert card.startswith("---\n") and "pipeline_tag: video-text-to-text" in card


def test_remote_code_loads_without_the_package(remote, local):
    assert not remote["package_importable"]
    assert all(name.startswith("transformers_modules.") for name in remote["classes"]), remote["classes"]
    assert [name.rsplit(".", 1)[1] for name in remote["classes"]] == [
        "FlashVStreamConfig", "FlashVStreamModel", "FlashVStreamForConditionalGeneration", "FlashVStreamProcessor",
    ]  # fmt: skip


def test_remote_code_computes_what_the_package_computes(remote, local, exported):
    root, _ = exported
    model, processor = local
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}],
        add_generation_prompt=True,
    )
    inputs = processor(text=prompt, videos=np.load(root / "frames.npy"), return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1]
    assert remote["input_ids"] == inputs["input_ids"][0].tolist()
    torch.testing.assert_close(torch.tensor(remote["logits"]), logits, rtol=1e-5, atol=1e-5)


def package_answer(model, processor, pixel_values: torch.Tensor) -> str:
    memory = model.update_memory(pixel_values)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}],
        add_generation_prompt=True,
    )
    inputs = processor(text=prompt, num_video_tokens=memory.get_seq_length(), return_tensors="pt")
    output = model.generate(**inputs, video_memory=memory, **GENERATE)
    return processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def test_handler_answers_each_question_from_the_frames_up_to_its_time(remote, local, exported):
    root, _ = exported
    model, processor = local
    video_answers, frame_answers = remote["answers"]
    # request order is kept; the whole video at 2 fps has 6 frames, t <= 1.0 s has 3 (0, 0.5, 1.0)
    assert [(a["time"], a["frames_seen"]) for a in video_answers] == [(None, 6), (1.0, 3)]
    pixels = processor(text="<video>", videos=str(root / "video.mp4"), fps=2.0, return_tensors="pt")[
        "pixel_values_videos"
    ]
    assert pixels.shape[1] == 6
    assert video_answers[0]["answer"] == package_answer(model, processor, pixels)
    assert video_answers[1]["answer"] == package_answer(model, processor, pixels[:, :3])
    # frames given as images at 1 fps: t <= 1.5 s are frames 0 and 1
    assert [(a["question"], a["frames_seen"]) for a in frame_answers] == [(QUESTION, 2)]
    frames = np.load(root / "frames.npy")[:2]
    pixels = processor(text="<video>", videos=frames, return_tensors="pt")["pixel_values_videos"]
    assert frame_answers[0]["answer"] == package_answer(model, processor, pixels)


def test_handler_rejects_malformed_questions():
    assert _parse_question("Why?") == {"question": "Why?", "time": float("inf")}
    assert _parse_question({"question": "Why?", "time": "2.5"}) == {"question": "Why?", "time": 2.5}
    with pytest.raises(ValueError, match="a question must be a string"):
        _parse_question({"text": "Why?"})


def test_export_hub_rejects_a_folder_that_is_not_a_converted_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        export_hub(tmp_path)


def test_push_to_hub_creates_the_repo_and_uploads_the_folder(exported, monkeypatch, capsys):
    root, _ = exported
    calls = []

    class RecordingApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs["private"], kwargs["exist_ok"]))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs["repo_id"], kwargs["folder_path"]))

    monkeypatch.setattr("huggingface_hub.HfApi", RecordingApi)
    files = push_to_hub(root / "repo", "someone/flash-vstream-tiny", private=True, token="t")
    assert calls == [
        ("init", "t"),
        ("create_repo", "someone/flash-vstream-tiny", True, True),
        ("upload_folder", "someone/flash-vstream-tiny", root / "repo"),
    ]
    assert ("model.safetensors", (root / "repo" / "model.safetensors").stat().st_size) in files


def test_cli_export_hub_dry_run(exported, capsys):
    root, _ = exported
    assert main(["export-hub", str(root / "repo"), "--push-to-hub", "someone/x", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "added to" in printed and "would upload" in printed and "  handler.py  " in printed
