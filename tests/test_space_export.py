"""`flash-vstream export-space`: the Space folder (app.py, requirements.txt, README.md front matter, the runtime
package and the bundled demo model), and its app.py run in a fresh interpreter where `import flash_vstream_hf`
fails and the project's sources are off `sys.path`, far enough to build the app and answer a question through
its Python API: with the model it serves by default, and with a checkpoint folder from $FLASH_VSTREAM_MODEL."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import gradio  # noqa: F401  (the `serve` extra)
import pytest
import yaml  # comes with gradio and huggingface-hub

from flash_vstream_hf.cli import main
from flash_vstream_hf.serving import loading
from flash_vstream_hf.serving.space_export import RUNTIME_PACKAGE, export_space

REPO = "someone/flash-vstream-7b-hf"
SOURCES = str(Path(__file__).resolve().parent.parent / "src")

SCRIPT = textwrap.dedent(
    """
    import json, os, runpy, sys
    sys.modules["flash_vstream_hf"] = None  # as on a machine without the package
    sys.path = [p for p in sys.path if not p.startswith(os.environ["PROJECT_SOURCES"])]
    space, checkpoint = sys.argv[1:3]
    os.environ["FLASH_VSTREAM_MODEL"] = "demo"  # the bundled model (tiny when the demo model is not installed)
    namespace = runpy.run_path(os.path.join(space, "app.py"), run_name="space_app")  # not __main__: no server
    app = namespace["app"]
    blocks = type(namespace["demo"]).__name__

    def ask(app, key):
        viewer = app.registry.get(key)
        viewer.play_builtin(app.streams[0].name)
        assert viewer.wait_for_frames(2, timeout=60)
        return list(viewer.ask(app.served.example_questions[0], max_new_tokens=3))[-1]

    first = ask(app, "space-test")
    os.environ["FLASH_VSTREAM_MODEL"] = checkpoint  # a converted folder, as a model repo would be
    other = namespace["ServeApp"](namespace["load"]())
    second = ask(other, "space-test-2")
    runtime = sys.modules["flash_vstream_runtime"].__file__
    print(json.dumps({
        "served": [app.served.name, other.served.name], "answers": [first, second], "blocks": blocks,
        "runtime": runtime, "package": sys.modules.get("flash_vstream_hf", "blocked"),
        "sources_on_path": any(p.startswith(os.environ["PROJECT_SOURCES"]) for p in sys.path),
    }))
    app.close(), other.close()
    """
)


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    folder = tmp_path_factory.mktemp("space")
    assert main(["export-space", str(folder), "--model-repo", REPO]) == 0
    return folder


def front_matter(readme: str) -> dict:
    assert readme.startswith("---\n")
    return yaml.safe_load(readme.split("---\n")[1])


def test_space_folder(space):
    meta = front_matter((space / "README.md").read_text())
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == gradio.__version__ and meta["app_file"] == "app.py"
    assert meta["models"] == [REPO] and len(meta["short_description"]) <= 60
    app = (space / "app.py").read_text()
    assert f'MODEL_REPO: str | None = "{REPO}"' in app
    requirements = (space / "requirements.txt").read_text()
    assert "transformers>=" in requirements and "av>=" in requirements
    runtime = space / RUNTIME_PACKAGE
    for name in ("modeling", "processing", "streaming", "serving"):
        assert (runtime / name / "__init__.py").is_file()
    assert not (runtime / "serving" / "space_export.py").exists() and not list(runtime.rglob("__pycache__"))
    assert not (runtime / "commands").exists()  # the command line stays behind
    assert (space / "demo_model" / "model.safetensors").is_file() == (loading.demo_checkpoint() is not None)


def test_without_a_model_repo_no_models_link(tmp_path):
    written = export_space(tmp_path / "s", bundle_demo=False)
    assert "demo_model/" not in written
    assert "models" not in front_matter((tmp_path / "s" / "README.md").read_text())
    with pytest.raises(ValueError, match="not a Hub repo id"):
        export_space(tmp_path / "t", model_repo="not a repo")


def test_space_app_runs_without_the_package(space, tiny, tmp_path):
    checkpoint = tmp_path / "converted"
    for part in tiny:
        part.save_pretrained(checkpoint)
    env = {**os.environ, "PROJECT_SOURCES": SOURCES, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": ""}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(space), str(checkpoint)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["package"] is None and not report["sources_on_path"]
    assert report["runtime"].startswith(str(space))
    assert report["blocks"] == "Blocks"
    assert report["served"] == [loading.default_model(), str(checkpoint)]
    for answer in report["answers"]:
        assert "frames]" in answer and "first token" in answer
