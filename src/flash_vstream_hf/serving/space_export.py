"""`flash-vstream export-space DIR`: the web app as a Hugging Face Space folder that runs without this package.

How the Space runs without the package: it carries its runtime. The subpackages the app imports (modeling,
processing, streaming, serving, synthetic and tiny) are copied, tree and relative imports intact, into
`DIR/flash_vstream_runtime/`, with a small `__init__.py` that registers the Auto classes; `app.py` imports that
package and loads the *weights* from the model repo with `from_pretrained` (or the demo model bundled in
`DIR/demo_model/`).

Why not `trust_remote_code` from the model repo, with only the streaming files carried? The streaming runtime
imports the model's internals (the memory class, video decoding), so the Space needs a copy of modeling and
processing anyway; loading the model's classes from the Hub too would put two versions of the same classes in
one process, free to drift apart whenever either repo changes. Carrying one consistent copy pins the Space to
the code it was exported (and tested) with, and runs no code fetched at start-up. The price: when the model
code changes, export the Space again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

RUNTIME_PACKAGE = "flash_vstream_runtime"
SUBPACKAGES = ("modeling", "processing", "streaming", "serving", "synthetic", "tiny")
# Not needed by the running Space: this exporter and the app template (written as app.py instead).
LEFT_OUT = {"serving": ("space_export.py", "space_app.py")}
SPACE_README = "README.md"
SPACE_FILES = ("app.py", "requirements.txt", SPACE_README)

RUNTIME_INIT = '''"""The Flash-VStream runtime the Space runs: a copy of flash-vstream-hf's modeling, processing,
streaming and serving code, written by `flash-vstream export-space`. Importing it registers the model with the
Auto classes, so `from_pretrained` of a Flash-VStream repo uses these classes (no remote code)."""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

from .modeling import FlashVStreamConfig, FlashVStreamForConditionalGeneration, FlashVStreamModel
from .processing import FlashVStreamProcessor

__version__ = "{version}"

AutoConfig.register(FlashVStreamConfig.model_type, FlashVStreamConfig, exist_ok=True)
AutoModel.register(FlashVStreamConfig, FlashVStreamModel, exist_ok=True)
AutoModelForImageTextToText.register(FlashVStreamConfig, FlashVStreamForConditionalGeneration, exist_ok=True)
AutoProcessor.register(FlashVStreamConfig, FlashVStreamProcessor, exist_ok=True)
'''


def package_root() -> Path:
    """The installed `flash_vstream_hf` package folder, whose sources are copied."""
    return Path(__file__).resolve().parent.parent


def requirements() -> str:
    """The Space's requirements.txt: what the runtime imports (gradio comes with the Space's `sdk_version`)."""
    from ..modeling.transformers_compat import SUPPORTED_TRANSFORMERS

    return "\n".join(
        [
            "# gradio is installed by the Space itself (README.md: sdk_version); elsewhere: pip install gradio",
            "torch>=2.4",
            SUPPORTED_TRANSFORMERS,
            "accelerate>=1.0",
            "safetensors>=0.4",
            "tokenizers>=0.22",
            "huggingface-hub>=1.0",
            "packaging>=23",
            "numpy>=1.26",
            "pillow>=10",
            "av>=12",
            "# bitsandbytes>=0.45  # for FLASH_VSTREAM_LOAD_IN_4BIT=1 on a GPU Space",
            "",
        ]
    )


def space_readme(model_repo: str | None, title: str, sdk_version: str) -> str:
    """README.md with the Space metadata front matter (sdk, sdk_version, app_file, models)."""
    models = f"models:\n  - {model_repo}\n" if model_repo else ""
    served = (
        f"[{model_repo}](https://huggingface.co/{model_repo})"
        if model_repo
        else "the small demo model trained on synthetic streams (bundled in `demo_model/`)"
    )
    return (
        "---\n"
        f"title: {title}\n"
        "emoji: 🎞️\n"
        "colorFrom: indigo\n"
        "colorTo: blue\n"
        "sdk: gradio\n"
        f'sdk_version: "{sdk_version}"\n'
        "app_file: app.py\n"
        "pinned: false\n"
        "license: apache-2.0\n"
        f"{models}"
        "short_description: Ask about a video stream while it plays\n"
        "---\n\n"
        f"# {title}\n\n"
        "Flash-VStream ([arXiv 2406.08085](https://arxiv.org/abs/2406.08085)) answers questions about a video "
        "*while it plays*: frames go into a fixed-size STAR memory in the background, and each question is "
        "answered from the memory as it is at that moment.\n\n"
        "Pick a built-in generated stream, upload a video, or open your webcam or a stream URL; type questions "
        "at any moment. Each answer says the stream time and the number of frames it saw; the status line shows "
        "frames, ingest speed and the memory's size. Every browser tab has its own stream and memory.\n\n"
        f"Model: {served}. Set `FLASH_VSTREAM_MODEL` in the Space's variables to serve another one. The "
        "7B model needs a GPU Space for real-time answers (`FLASH_VSTREAM_LOAD_IN_4BIT=1` fits a T4).\n\n"
        "Run it locally: `pip install -r requirements.txt gradio && python app.py` (serves on 127.0.0.1:7860).\n"
    )


def export_space(
    folder: str | Path,
    model_repo: str | None = None,
    title: str = "Flash-VStream",
    bundle_demo: bool = True,
) -> list[str]:
    """Write the Space into `folder` (created if needed; files this writes are replaced); returns the names
    written. `model_repo` (`owner/name`) is the model the Space serves and its README links; without it, the
    bundled demo model (or the tiny one, when the demo model is not installed)."""
    import gradio

    from .. import __version__
    from ..conversion.export_hub import check_repo_id
    from .loading import demo_checkpoint

    if model_repo is not None:
        check_repo_id(model_repo)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    root, runtime = package_root(), folder / RUNTIME_PACKAGE
    shutil.rmtree(runtime, ignore_errors=True)  # nothing left over from an older export
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SUBPACKAGES:
        shutil.copytree(root / name, runtime / name, ignore=ignore)
        for left_out in LEFT_OUT.get(name, ()):
            (runtime / name / left_out).unlink(missing_ok=True)
    (runtime / "__init__.py").write_text(RUNTIME_INIT.format(version=__version__))
    written = [f"{RUNTIME_PACKAGE}/"]

    app = (Path(__file__).parent / "space_app.py").read_text()
    marker = "MODEL_REPO: str | None = None"
    if marker not in app:
        raise RuntimeError(f"space_app.py has no line {marker!r} to fill in")
    (folder / "app.py").write_text(app.replace(marker, f"MODEL_REPO: str | None = {json.dumps(model_repo)}"))
    (folder / "requirements.txt").write_text(requirements())
    (folder / SPACE_README).write_text(space_readme(model_repo, title, gradio.__version__))
    written += list(SPACE_FILES)

    checkpoint = demo_checkpoint() if bundle_demo else None
    shutil.rmtree(folder / "demo_model", ignore_errors=True)
    if checkpoint is not None:
        shutil.copytree(checkpoint, folder / "demo_model")
        written.append("demo_model/")
    return written
