"""Flash-VStream v2 through the product, as v1 runs it: `ask`, `chat` (memory saved and resumed), `eval` and the
`serve` app on a saved v2 folder (`--model FOLDER`), through the one runtime (`StreamingSession`). Each answer is
checked against the library path: the same frames through `preprocess_frames`, `update_memory` and
`generate_answer` on a fresh memory."""

from __future__ import annotations

import io
import json
import sys

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from flash_vstream_hf.cli import main
from flash_vstream_hf.commands import serve as serve_command
from flash_vstream_hf.processing import read_video_frames
from flash_vstream_hf.qwen2vl.memory_flash_vstream_qwen2vl import FlashVStreamQwen2VLMemory
from flash_vstream_hf.serving import ServeApp
from flash_vstream_hf.serving.builtin import BuiltinStream
from flash_vstream_hf.streaming import StreamSnapshot
from flash_vstream_hf.streaming.answering import generate_answer
from flash_vstream_hf.tiny import write_synthetic_video
from flash_vstream_hf.tiny.qwen2vl import save_tiny_qwen2vl

from .eval_helpers import read_predictions, run_eval
from .test_qwen2vl_model import original_layout_checkpoint
from .test_serve_app import serve_args

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TOKENS = 4


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_qwen2vl(tmp_path_factory.mktemp("v2") / "tiny-v2")


@pytest.fixture(scope="module")
def loaded(folder):
    import flash_vstream_hf  # noqa: F401  (registers the Auto classes)

    return AutoModelForImageTextToText.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_synthetic_video(tmp_path_factory.mktemp("video") / "clip.mp4", num_frames=80, fps=10)


def library_answer(loaded, video: str, frames: int, question: str) -> str:
    """The first `frames` frames at 1 fps, streamed one by one into a fresh memory, then answered."""
    model, processor = loaded
    images = [frame.image for frame in read_video_frames(video, fps=1.0)][:frames]
    memory = model.new_memory()
    with torch.no_grad():
        for image in images:
            model.update_memory(processor.preprocess_frames([image], return_tensors="pt")[None], memory)
    kwargs = {"max_new_tokens": TOKENS, "do_sample": False}
    return generate_answer(model, processor, question, StreamSnapshot(memory, None), kwargs, 0.0).text


def test_ask_answers_a_v2_folder_as_of_each_time(folder, loaded, video, capsys):
    argv = ["ask", video, "--model", folder, "--json", "--max-new-tokens", str(TOKENS),
            "--at", "5", "w10 w11", "--at", "2", "w12"]  # fmt: skip
    assert main(argv) == 0
    answers = json.loads(capsys.readouterr().out)["answers"]
    assert [(a["at"], a["frames"]) for a in answers] == [(5.0, 6), (2.0, 3)]
    for answer, (frames, question) in zip(answers, [(6, "w10 w11"), (3, "w12")]):
        assert answer["answer"] and answer["answer"] == library_answer(loaded, video, frames, question)


def test_ask_answers_a_folder_in_the_originals_layout_as_the_saved_one(folder, loaded, video, tmp_path, capsys):
    """The original's checkpoint layout (transformers 4.45 config and weight names) runs without conversion."""
    model, processor = loaded
    original = tmp_path / "original"
    original_layout_checkpoint(model, original)
    processor.save_pretrained(original)
    answers = []
    for model_folder in (folder, original):
        argv = ["ask", video, "--model", str(model_folder), "--json", "--max-new-tokens", str(TOKENS), "--at", "4",
                "w10 w11"]  # fmt: skip
        assert main(argv) == 0
        [answer] = json.loads(capsys.readouterr().out)["answers"]
        answers.append((answer["answer"], answer["frames"], answer["memory_tokens"]))
    assert answers[0] == answers[1] and answers[0][0]


def chat(monkeypatch, capsys, lines: list[str], *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(line + "\n" for line in lines)))
    code = main(["chat", *args, "--max-new-tokens", str(TOKENS)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_chat_saves_a_v2_memory_and_resumes_from_it(folder, loaded, video, tmp_path, monkeypatch, capsys):
    saved = tmp_path / "v2-memory.safetensors"
    code, out, _ = chat(monkeypatch, capsys, ["/wait", "w10", f"/save {saved}"], video, "--model", folder,
                        "--speed", "0")  # fmt: skip
    assert code == 0 and "[memory: 8 frames" in out
    assert FlashVStreamQwen2VLMemory.load(saved).frames_seen == 8
    answer = next(line for line in out.splitlines() if line.startswith("A: "))
    assert answer == "A: " + library_answer(loaded, video, 8, "w10")

    code, out, _ = chat(monkeypatch, capsys, ["/wait", "w11"], video, "--model", folder, "--speed", "0",
                        "--resume", str(saved))  # fmt: skip
    assert code == 0 and "[memory: 16 frames" in out  # the saved 8 frames and the video's 8 again


def test_chat_refuses_a_v1_memory_for_a_v2_model_naming_the_file(folder, video, tmp_path, monkeypatch, capsys):
    from flash_vstream_hf.tiny import tiny_model

    v1_file = tmp_path / "v1.safetensors"
    tiny_model().new_memory(1).save(v1_file)
    code, out, err = chat(monkeypatch, capsys, ["w10"], video, "--model", folder, "--resume", str(v1_file))
    assert code == 1 and "A: " not in out
    assert "error: --resume " in err and "v1.safetensors: it is not a Flash-VStream-Qwen memory file" in err


def test_eval_runs_a_v2_folder(folder, loaded, video, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "clip.mp4").write_bytes(open(video, "rb").read())
    items = [{"id": "a", "video_id": "clip", "question": "w13 w14", "answer": "w15", "answer_type": "object",
              "end_time": 3}, {"id": "b", "video_id": "clip", "question": "w16", "answer": "w17",
              "answer_type": "object", "end_time": 6}]  # fmt: skip
    annotations = tmp_path / "rvs.json"
    annotations.write_text(json.dumps(items))
    argv = [str(annotations), "--format", "rvs", "--videos", str(videos), "--output", str(tmp_path / "out"),
            "--model", folder, "--max-new-tokens", str(TOKENS), "--no-progress"]  # fmt: skip
    assert run_eval(argv) == 0
    records = read_predictions(tmp_path / "out" / "predictions.jsonl")
    assert (records["a"]["frames_seen"], records["b"]["frames_seen"]) == (4, 7)
    assert records["a"]["prediction"] == library_answer(loaded, video, 4, "w13 w14")
    assert records["b"]["prediction"] == library_answer(loaded, video, 7, "w16")


def test_serve_answers_from_a_v2_folder(folder):
    served = serve_command.resolve(serve_args(model=folder))
    assert served.model.config.model_type == "flash_vstream_qwen2_vl"
    app = ServeApp(served, streams=[BuiltinStream("short", seed=1, seconds=20)], max_sessions=1)
    try:
        viewer = app.registry.get("tab")
        viewer.play_builtin("short")
        assert viewer.wait_for_frames(3, timeout=30)
        pieces = list(viewer.ask("w10 w11", max_new_tokens=TOKENS))
        assert "first token" in pieces[-1]
        assert viewer.status().memory_tokens > 0
    finally:
        app.close()


def test_the_runtime_and_export_hub_know_the_same_families():
    """A family added to one table only would load in the commands but not export, or the other way round."""
    from flash_vstream_hf.conversion.export_hub import FAMILIES as EXPORTED
    from flash_vstream_hf.families import FAMILIES

    assert set(FAMILIES) == set(EXPORTED) == {"flash_vstream", "flash_vstream_qwen2_vl"}


def test_a_folder_of_another_model_type_is_refused_naming_both_families(tmp_path, capsys):
    other = tmp_path / "llava"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(SystemExit) as exit_status:
        main(["ask", "clip.mp4", "--model", str(other), "--at", "1", "w10"])
    err = capsys.readouterr().err
    assert exit_status.value.code == 1
    assert "'llava' config, not one of 'flash_vstream', 'flash_vstream_qwen2_vl'" in err
