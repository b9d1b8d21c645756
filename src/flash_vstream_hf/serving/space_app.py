"""Flash-VStream on a Hugging Face Space: watch a stream and ask about it while it plays.

Written by `flash-vstream export-space`. It needs no `flash_vstream_hf` install: the runtime it runs (modeling,
processing, the streaming session and this web app) is the `flash_vstream_runtime` package next to this file,
copied from the flash-vstream-hf release that exported it. The weights come from the model repo
(`MODEL_REPO`, the one the README's `models:` names), or from the small demo model bundled in `demo_model/`.

Environment (Space settings, "Variables"):
    FLASH_VSTREAM_MODEL         a Hub model id or folder to serve instead, or "demo" / "tiny"
    FLASH_VSTREAM_LOAD_IN_4BIT  "1": bitsandbytes NF4 weights for the language model (GPU Spaces)
    FLASH_VSTREAM_MAX_SESSIONS  browser tabs served at once (default 4)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the runtime package next to this file, wherever the app is started from

from flash_vstream_runtime.serving import ServeApp, ServedModel, load_pretrained, load_tiny  # noqa: E402

MODEL_REPO: str | None = None  # set by export-space --model-repo
BUNDLED_DEMO = HERE / "demo_model"


def load() -> ServedModel:
    """The model to serve: $FLASH_VSTREAM_MODEL, else MODEL_REPO, else the bundled demo model, else tiny."""
    spec = os.environ.get("FLASH_VSTREAM_MODEL") or MODEL_REPO
    if spec == "tiny" or (spec in (None, "", "demo") and not (BUNDLED_DEMO / "model.safetensors").is_file()):
        return load_tiny()
    if spec in (None, "", "demo"):
        return load_pretrained(BUNDLED_DEMO, name="demo")
    return load_pretrained(spec, load_in_4bit=os.environ.get("FLASH_VSTREAM_LOAD_IN_4BIT") == "1")


app = ServeApp(load(), max_sessions=int(os.environ.get("FLASH_VSTREAM_MAX_SESSIONS", "4")))
demo = app.blocks  # the name `gradio app.py` (reload mode) looks for

if __name__ == "__main__":
    # A Space sets GRADIO_SERVER_NAME to 0.0.0.0 (its container's port is proxied); anywhere else, loopback.
    host = os.environ.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1")
    app.launch(host=host, port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
