"""The trained demo model shipped with the package (`flash_vstream_hf/demo_model/`), loaded with `from_pretrained`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

CHECKPOINT_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "processor_config.json",
)


def demo_model_path() -> Path:
    """Folder of the shipped checkpoint: config, safetensors weights, tokenizer, processor, `training.json`."""
    return Path(str(resources.files("flash_vstream_hf") / "demo_model"))


def demo_model(path: str | Path | None = None):
    """`(model, processor)`: the small Flash-VStream trained on synthetic streams (`flash-vstream train-demo`),
    in eval mode, on CPU, from the package (or from `path`, e.g. a folder `train-demo` wrote). No download."""
    import flash_vstream_hf  # noqa: F401  (registers the Auto classes)

    from ..modeling import FlashVStreamForConditionalGeneration
    from ..processing import FlashVStreamProcessor

    path = Path(path) if path is not None else demo_model_path()
    if not (path / "model.safetensors").exists():
        raise FileNotFoundError(
            f"no trained demo model in {path}; train one with `flash-vstream train-demo --output-dir {path}`"
        )
    model = FlashVStreamForConditionalGeneration.from_pretrained(path).eval()
    processor = FlashVStreamProcessor.from_pretrained(path)
    return model, processor
