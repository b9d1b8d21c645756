"""`flash-vstream export-hub`: an exported folder loads with `trust_remote_code=True` where flash_vstream_hf cannot
be imported (and refuses a transformers release outside the tested range), its card names the repo and a pipeline
task that runs, and its Inference Endpoints handler answers questions about a video at given times."""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from packaging.requirements import Requirement
from transformers import pipeline

from flash_vstream_hf import FlashVStreamForConditionalGeneration, FlashVStreamProcessor
from flash_vstream_hf.cli import main
from flash_vstream_hf.conversion import convert_checkpoint, export_hub, push_to_hub
from flash_vstream_hf.conversion.handler import PayloadError, Question, parse_question
from flash_vstream_hf.modeling.transformers_compat import ALLOW_ANY_VERSION_ENV, SUPPORTED_TRANSFORMERS
from flash_vstream_hf.tiny import synthetic_frame, write_synthetic_video

from .helpers import b64, png
from .original_layout import build_original_model, write_checkpoint, write_clip_folder

QUESTION = "What happens?"
REPO_ID = "someone/flash-vstream-tiny"
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
    from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor, pipeline

    folder, frames_path, request_path, task, video_path = sys.argv[1:6]
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
    requests = json.load(open(request_path))
    answers = [handler(request) for request in requests]
    try:  # the bundle's own request schema, without the package
        handler({"inputs": {"frames": [], "questions": ["What happens?"]}})
        refused = None
    except ValueError as error:
        refused = [type(error).__name__, getattr(error, "field", None), str(error)]

    # the card's pipeline_tag, as the Hub's widget and `pipeline(task, model=repo)` use it
    video_chat = [{"role": "user", "content": [{"type": "video", "path": video_path},
                                               {"type": "text", "text": "What happens?"}]}]
    generated = pipeline(task, model=folder, trust_remote_code=True)(
        text=video_chat, return_full_text=False, generate_kwargs=requests[0]["parameters"]
    )
    print(json.dumps({
        "package_importable": package_importable,
        "classes": [type(x).__module__ + "." + type(x).__name__ for x in (config, base, model, processor)],
        "input_ids": inputs["input_ids"][0].tolist(),
        "logits": logits.tolist(),
        "answers": answers,
        "refused": refused,
        "pipeline": generated[0]["generated_text"],
    }))
    """
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    write_checkpoint(build_original_model(seed=0), root / "original")
    write_clip_folder(root / "clip")
    convert_checkpoint(str(root / "original"), root / "repo", vision_tower=str(root / "clip"), dtype="float32")
    written = export_hub(root / "repo", repo_id=REPO_ID)
    return root, written


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
    task = card_metadata(root / "repo").pipeline_tag
    arguments = [root / "repo", root / "frames.npy", root / "requests.json", task, video]
    result = run_without_the_package(REMOTE_SCRIPT, arguments, root)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_without_the_package(script: str, arguments: list, root: Path, **env: str) -> subprocess.CompletedProcess:
    """Run `script` in a fresh interpreter, offline, with a Hub cache of its own under `root`. The version-check
    override is not inherited from the caller (scripts/check_transformers.py sets it): only `env` sets it."""
    inherited = {name: value for name, value in os.environ.items() if name != ALLOW_ANY_VERSION_ENV}
    env = {**inherited, "HF_HOME": str(root / "hf_home"), "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run(
        [sys.executable, "-c", script, *map(str, arguments)],
        capture_output=True, text=True, env=env, cwd=root, timeout=300, check=False,
    )  # fmt: skip


def card_metadata(folder: Path):
    """The exported README.md's front matter, parsed as the Hub does."""
    return ModelCard((folder / "README.md").read_text()).data


def python_blocks(card: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card, flags=re.DOTALL)


def minimal_folder(folder: Path) -> Path:
    """What export-hub needs of a converted folder, without converting anything."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "flash_vstream"}))
    (folder / "processor_config.json").write_text("{}")
    return folder


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
    assert (repo / "README.md").read_text().startswith("---\n")


def test_card_metadata_names_the_source_checkpoint_and_the_pipeline_that_runs(exported):
    root, _ = exported
    metadata = card_metadata(root / "repo")
    # registered for AutoModelForImageTextToText; transformers has no video-text-to-text pipeline
    assert metadata.pipeline_tag == "image-text-to-text"
    assert "video-text-to-text" in metadata.tags
    assert metadata.base_model[0] == "IVGSZ/Flash-VStream-7b"
    assert metadata.library_name == "transformers" and metadata.license == "llama2"


def test_card_usage_code_names_the_repo_and_the_supported_transformers(exported):
    root, _ = exported
    card = (root / "repo" / "README.md").read_text()
    blocks = python_blocks(card)
    assert f'repo = "{REPO_ID}"' in blocks[0]
    assert all("<this repo>" not in block and "OWNER/NAME" not in block for block in blocks)
    assert "{{" not in card and "Replace `OWNER/NAME`" not in card
    assert f"`{SUPPORTED_TRANSFORMERS}`" in card


def test_card_without_a_repo_id_says_what_to_replace(tmp_path):
    folder = minimal_folder(tmp_path / "repo")
    export_hub(folder)
    card = (folder / "README.md").read_text()
    assert "{{" not in card and "<this repo>" not in card
    assert 'repo = "OWNER/NAME"' in python_blocks(card)[0]
    usage = card[card.index("## Usage") :]
    assert usage.index("Replace `OWNER/NAME`") < usage.index("```python")  # said before the code


def test_requirements_pin_the_supported_transformers(exported):
    root, _ = exported
    requirements = [Requirement(line) for line in (root / "repo" / "requirements.txt").read_text().splitlines()]
    pinned = [r for r in requirements if r.name == "transformers"]
    assert [str(r) for r in pinned] == [str(Requirement(SUPPORTED_TRANSFORMERS))]


def test_card_pipeline_task_runs_on_the_remote_code(remote, local, exported):
    root, _ = exported
    model, processor = local
    chat = [{"role": "user", "content": [{"type": "video", "path": str(root / "video.mp4")},
                                         {"type": "text", "text": QUESTION}]}]  # fmt: skip
    generated = pipeline("image-text-to-text", model=model, processor=processor)(
        text=chat, return_full_text=False, generate_kwargs=GENERATE
    )
    assert remote["pipeline"] == generated[0]["generated_text"]


VERSION_SCRIPT = textwrap.dedent(
    """
    import json
    import sys
    sys.modules["flash_vstream_hf"] = None
    import transformers
    transformers.__version__ = "5.99.0"  # a release outside the supported range
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(sys.argv[1], trust_remote_code=True)
    except ImportError as error:
        print(json.dumps({"error": str(error)}))
    else:
        print(json.dumps({"loaded": type(config).__name__}))
    """
)


def assert_remote_code_refuses_unsupported_transformers(root: Path, config_class: str) -> None:
    """The exported `root / "repo"` refuses a fake transformers 5.99.0, naming the supported range, and loads its
    `config_class` when the override is set."""
    refused = run_without_the_package(VERSION_SCRIPT, [root / "repo"], root)
    assert refused.returncode == 0, refused.stderr[-3000:]
    error = json.loads(refused.stdout.strip().splitlines()[-1]).get("error", "")
    assert SUPPORTED_TRANSFORMERS in error and "5.99.0" in error, refused.stdout
    allowed = run_without_the_package(VERSION_SCRIPT, [root / "repo"], root, **{ALLOW_ANY_VERSION_ENV: "1"})
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert json.loads(allowed.stdout.strip().splitlines()[-1]) == {"loaded": config_class}


def test_remote_code_refuses_an_unsupported_transformers_unless_overridden(exported):
    assert_remote_code_refuses_unsupported_transformers(exported[0], "FlashVStreamConfig")


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
    assert parse_question("Why?") == Question("Why?", float("inf"))
    assert parse_question({"question": "Why?", "time": 2.5}) == Question("Why?", 2.5)
    assert parse_question({"question": "Why?", "time": None}) == Question("Why?", float("inf"))
    with pytest.raises(PayloadError, match=r"^q\.time: must be a finite number >= 0 \(seconds\), got '2\.5'$"):
        parse_question({"question": "Why?", "time": "2.5"}, "q")  # a number, not a string holding one
    with pytest.raises(ValueError, match=r"^q: must be a string or \{'question': str, 'time': seconds\}"):
        parse_question(42, "q")


def test_exported_handler_refuses_a_malformed_request_without_the_package(remote):
    name, field, message = remote["refused"]
    assert (name, field) == ("PayloadError", "inputs.frames")
    assert message == "inputs.frames: must hold at least one frame"


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


def test_cli_export_hub_dry_run(tmp_path, capsys):
    folder = minimal_folder(tmp_path / "repo")
    assert main(["export-hub", str(folder), "--push-to-hub", "someone/x", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "added to" in printed and "would upload" in printed and "  handler.py  " in printed
    assert 'repo = "someone/x"' in python_blocks((folder / "README.md").read_text())[0]


def test_cli_export_hub_repo_id_fills_in_the_card(tmp_path, capsys):
    folder = minimal_folder(tmp_path / "repo")
    assert main(["export-hub", str(folder), "--repo-id", "someone/y"]) == 0
    assert 'repo = "someone/y"' in python_blocks((folder / "README.md").read_text())[0]
    assert "--repo-id" not in capsys.readouterr().err
    assert main(["export-hub", str(folder)]) == 0
    assert "--repo-id" in capsys.readouterr().err  # the card says OWNER/NAME: say how to fill it in


@pytest.mark.parametrize(
    "arguments, message",
    [(["--repo-id", "a/b", "--push-to-hub", "a/c"], "--repo-id a/b but --push-to-hub a/c"),
     (["--repo-id", "not a repo id"], "not a repo id")],
)  # fmt: skip
def test_cli_export_hub_rejects_a_bad_repo_id(tmp_path, capsys, arguments, message):
    folder = minimal_folder(tmp_path / "repo")
    assert main(["export-hub", str(folder), *arguments]) == 1
    assert message in capsys.readouterr().err
    assert not (folder / "README.md").exists()  # checked before anything is written


DEMO_REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["flash_vstream_hf"] = None
    import json
    import numpy as np
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder, frames_path, question = sys.argv[1:4]
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    chat = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(chat, add_generation_prompt=True)
    inputs = processor(text=prompt, videos=np.load(frames_path), return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=1, do_sample=False)
    print(json.dumps(processor.tokenizer.convert_ids_to_tokens(generated[0, -1:].tolist())))
    """
)


def test_the_exported_demo_model_answers_with_remote_code_as_the_package_does(tmp_path):
    import shutil

    from flash_vstream_hf.synthetic import SyntheticStream
    from flash_vstream_hf.synthetic.checkpoint import demo_model, demo_model_path

    folder = tmp_path / "demo"
    shutil.copytree(demo_model_path(), folder)
    assert main(["export-hub", str(folder), "--model-card", str(folder / "README.md")]) == 0
    assert (folder / "README.md").read_text().startswith("# The trained demo model")  # its own card, kept
    frames = SyntheticStream(5).frames(0, 40)
    np.save(tmp_path / "frames.npy", frames)
    question = "how many shapes are there now"
    result = run_without_the_package(DEMO_REMOTE_SCRIPT, [folder, tmp_path / "frames.npy", question], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    remote_words = json.loads(result.stdout.strip().splitlines()[-1])

    model, processor = demo_model()
    chat = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(chat, add_generation_prompt=True)
    inputs = processor(text=prompt, videos=frames, return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=1, do_sample=False)
    assert remote_words == processor.tokenizer.convert_ids_to_tokens(generated[0, -1:].tolist())
    assert remote_words[0] in ("zero", "one", "two")
