"""Which model the app serves, and how it is described on the page.

`serve` (and the Space) default to the small trained demo model when it can be used: its loader
(`flash_vstream_hf.synthetic.checkpoint`) imports and its checkpoint is there. Otherwise the tiny random-weight
model, which runs the whole pipeline but answers gibberish; the page says which one it is, so nobody mistakes
either for the real 7B model.

This module imports nothing from `commands/`: the exported Space carries it without the command line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEMO, TINY = "demo", "tiny"
# Questions in the demo model's vocabulary (synthetic/questions.py): it knows nothing else.
DEMO_QUESTIONS = [
    "how many shapes are there now",
    "what colour is the circle now",
    "is there a red shape now",
    "what colour was the square two seconds ago",
    "did a blue shape appear",
    "which colour was on screen longest",
]
TINY_QUESTIONS = ["What is moving?", "What colour is the background?"]
NOTES = {
    DEMO: "Model: **the small demo model trained on synthetic streams** (CPU). It knows the synthetic world's "
    "shapes and colours and one-word answers only: pick a built-in stream and ask questions like the examples.",
    TINY: "Model: **TINY MODEL WITH RANDOM WEIGHTS** (no download): the pipeline is real, the answers are "
    "gibberish by design. Start `flash-vstream serve --model PATH` with a converted checkpoint for real answers.",
}


@dataclass
class ServedModel:
    """A loaded model with what the page says about it."""

    model: object
    processor: object
    name: str
    note: str = ""
    example_questions: list[str] = field(default_factory=list)
    max_new_tokens: int = 64


def demo_checkpoint() -> Path | None:
    """The demo model's checkpoint folder if its loader imports and the weights are there, else None."""
    try:
        from ..synthetic.checkpoint import demo_model_path
    except ImportError:
        return None
    path = Path(demo_model_path())
    return path if (path / "model.safetensors").is_file() else None


def default_model() -> str:
    """`"demo"` when the demo model can be loaded, else `"tiny"`."""
    return DEMO if demo_checkpoint() is not None else TINY


def describe(model, processor, name: str) -> ServedModel:
    """`model` and `processor` with the page's note, example questions and answer length for `name`
    (`"demo"`, `"tiny"`, or a checkpoint folder / Hub id)."""
    if name == DEMO:
        return ServedModel(model, processor, DEMO, NOTES[DEMO], DEMO_QUESTIONS, max_new_tokens=4)
    if name == TINY:
        return ServedModel(model, processor, TINY, NOTES[TINY], TINY_QUESTIONS, max_new_tokens=24)
    note = f"Model: `{name}`."
    return ServedModel(model, processor, name, note, ["What is happening?", "What happened a minute ago?"])


def load_pretrained(spec: str | os.PathLike, name: str | None = None, load_in_4bit: bool = False) -> ServedModel:
    """Load a converted checkpoint folder or Hub id with the Auto classes (registered by this package's
    `__init__`), on the GPU when there is one. Used by the Space; `serve` loads through commands/common.py."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig

    device = "cuda" if torch.cuda.is_available() else "cpu"
    quantization = None
    if load_in_4bit:
        quantization = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )  # fmt: skip
    model = AutoModelForImageTextToText.from_pretrained(
        spec, dtype="auto", device_map=device, quantization_config=quantization
    ).eval()
    processor = AutoProcessor.from_pretrained(spec)
    return describe(model, processor, name or os.fspath(spec))


def load_tiny() -> ServedModel:
    """The tiny random-weight model (no download)."""
    from ..tiny import tiny_model, tiny_processor

    return describe(tiny_model(), tiny_processor(), TINY)
