"""Official checkpoint (`IVGSZ/Flash-VStream-7b`, original layout) -> this project's format; Hub export."""

from .convert import ConversionReport, convert_checkpoint
from .export_hub import export_hub, push_to_hub

__all__ = ["ConversionReport", "convert_checkpoint", "export_hub", "push_to_hub"]
