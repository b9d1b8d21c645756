"""The Inference Endpoints handler (`handler.py`) on a v2 model: in the package, and from an exported v2 repo without
the package (its remote code, and the `video_io.py` and `demuxers.py` export-hub ships beside it). Each answer is
checked against a memory built from the same frames without the handler."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from flash_vstream_hf.conversion import export_hub
from flash_vstream_hf.conversion.handler import EndpointHandler
from flash_vstream_hf.qwen2vl.modeling_flash_vstream_qwen2vl import FlashVStreamQwen2VLFrameFeatures
from flash_vstream_hf.streaming.answering import build_inputs
from flash_vstream_hf.tiny import synthetic_frame, write_synthetic_video
from flash_vstream_hf.tiny.qwen2vl import save_tiny_qwen2vl

from .helpers import b64, png
from .test_hub_export import run_without_the_package

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUESTION = "w10 w11"
GENERATE = {"max_new_tokens": 3, "do_sample": False}
FRAMES = [synthetic_frame(i) for i in range(5)]
REQUEST = {"inputs": {"frames": [png(frame) for frame in FRAMES],
                      "questions": [QUESTION, {"question": QUESTION, "time": 1.0}]},
           "parameters": GENERATE}  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return Path(save_tiny_qwen2vl(tmp_path_factory.mktemp("v2") / "tiny-v2"))


@pytest.fixture(scope="module")
def loaded(folder):
    import flash_vstream_hf  # noqa: F401  (registers the Auto classes)

    return AutoModelForImageTextToText.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)


def direct_answer(model, processor, images: list) -> str:
    """The answer to QUESTION from a memory updated once with `images`, without the handler."""
    with torch.no_grad():
        memory = model.update_memory(processor.preprocess_frames(images, return_tensors="pt")[None])
        inputs = build_inputs(processor, QUESTION, memory.get_seq_length(), model.device)
        output = model.generate(**inputs, video_memory=memory, **GENERATE)
    return processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def test_the_handler_answers_a_v2_model_from_the_frames_up_to_each_time(loaded, tmp_path):
    model, processor = loaded
    handler = EndpointHandler.from_model(model, processor)
    answers = handler(REQUEST)
    assert [(a["time"], a["frames_seen"]) for a in answers] == [(None, 5), (1.0, 2)]
    expected = [direct_answer(model, processor, FRAMES), direct_answer(model, processor, FRAMES[:2])]
    assert [a["answer"] for a in answers] == expected and all(expected)
    video = write_synthetic_video(tmp_path / "clip.mp4", num_frames=60, fps=10)  # 6 s
    request = {"inputs": {"video": b64(Path(video).read_bytes()), "fps": 2.0, "questions": [QUESTION]},
               "parameters": GENERATE}  # fmt: skip
    assert [a["frames_seen"] for a in handler(request)] == [12]


def test_frame_features_of_consecutive_batches_join_in_order_and_refuse_two_grids(loaded):
    model, processor = loaded
    pixels = processor.preprocess_frames(FRAMES, return_tensors="pt")[None]
    with torch.no_grad():
        whole = model.get_frame_features(pixels)
        joined = FlashVStreamQwen2VLFrameFeatures.cat([model.get_frame_features(pixels[:, :2]),
                                                       model.get_frame_features(pixels[:, 2:])])  # fmt: skip
    assert joined.grid == whole.grid and joined.shape == whole.shape
    torch.testing.assert_close(joined.full, whole.full)
    torch.testing.assert_close(joined.low, whole.low)
    other = FlashVStreamQwen2VLFrameFeatures(whole.full, whole.low, tuple(2 * g for g in whole.grid))
    with pytest.raises(ValueError, match="one patch grid"):
        FlashVStreamQwen2VLFrameFeatures.cat([whole, other])


EXPORTED_HANDLER = textwrap.dedent(
    """
    import sys
    sys.modules["flash_vstream_hf"] = None
    import json

    folder, request_path = sys.argv[1:3]
    sys.path.insert(0, folder)
    from handler import EndpointHandler

    handler = EndpointHandler(folder)
    answers = handler(json.load(open(request_path)))
    try:
        handler({"inputs": {"frames": [], "questions": ["what"]}})
        refused = None
    except ValueError as error:
        refused = [type(error).__name__, getattr(error, "field", None), str(error)]
    print(json.dumps({"model": type(handler.model).__name__, "answers": answers, "refused": refused}))
    """
)


def test_the_handler_of_an_exported_v2_repo_answers_without_the_package(folder, loaded, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(folder, repo)
    written = export_hub(repo, repo_id="someone/flash-vstream-qwen-tiny")
    assert {"handler.py", "requirements.txt", "video_io.py", "demuxers.py"} <= set(written)
    (tmp_path / "request.json").write_text(json.dumps(REQUEST))
    result = run_without_the_package(EXPORTED_HANDLER, [repo, tmp_path / "request.json"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["model"] == "FlashVStreamQwen2VLForConditionalGeneration"
    assert report["answers"] == EndpointHandler.from_model(*loaded)(REQUEST)  # as the package's model answers
    assert report["refused"] == ["PayloadError", "inputs.frames", "inputs.frames: must hold at least one frame"]
