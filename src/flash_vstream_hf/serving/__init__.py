"""`flash-vstream serve`: a web page to watch a stream and ask about it while it plays, one STAR memory per tab.

- `app.py`: `ServeApp`, the model, the per-tab viewers and the page, with a Python API;
- `ui.py`: the Gradio page (why Gradio: see there);
- `viewer.py`: one tab's stream, memory and questions; `registry.py`: all tabs, bounded;
- `builtin.py`: the generated streams; `webcam.py`: frames from the page's webcam;
- `loading.py`: which model is served (demo, tiny, a checkpoint) and what the page says about it;
- `space_export.py`: `flash-vstream export-space`, the same app as a Hugging Face Space.
"""

from .app import DEFAULT_HOST, DEFAULT_PORT, ServeApp
from .loading import ServedModel, default_model, demo_checkpoint, describe, load_pretrained, load_tiny
from .viewer import UserError, Viewer

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "ServeApp",
    "ServedModel",
    "UserError",
    "Viewer",
    "default_model",
    "demo_checkpoint",
    "describe",
    "load_pretrained",
    "load_tiny",
]
