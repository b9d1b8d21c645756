"""The model a stream host loads once and shares between its streams: `demo`, `tiny` or a checkpoint."""

from __future__ import annotations

from ..serving.loading import DEMO, TINY, ServedModel, describe, load_pretrained, load_tiny


def load_served_model(spec: str, load_in_4bit: bool = False) -> ServedModel:
    """`demo` (the shipped demo model), `tiny` (random weights) or a converted folder / Hub id."""
    if spec == DEMO:
        from ..synthetic.checkpoint import demo_model

        model, processor = demo_model()
        return describe(model, processor, DEMO)
    if spec == TINY:
        return load_tiny()
    return load_pretrained(spec, load_in_4bit=load_in_4bit)
