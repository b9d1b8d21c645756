"""The model families the runtime serves, by the config's `model_type`. Both offer the same streaming interface
(`new_memory`, `check_memory`, `get_frame_features`, `update_memory_from_features`, `generate(video_memory=)`;
processors with `preprocess_frames` and `num_video_tokens=`), so `StreamingSession`, `ask`, `chat`, `serve`, `eval`
and the endpoint handler run either; what differs between them is here."""

from __future__ import annotations

import os

FAMILIES = {
    "flash_vstream": "Flash-VStream (v1: CLIP ViT-L/14 + Vicuna, STAR memory)",
    "flash_vstream_qwen2_vl": "Flash-VStream v2 (Qwen2-VL + Flash Memory)",
}


def memory_class(model) -> type:
    """The memory class of `model`'s family (`FlashVStreamMemory` or `FlashVStreamQwen2VLMemory`): what its memory
    files load with."""
    return type(model.new_memory())


def load_memory(path: str | os.PathLike):
    """The memory in the file at `path`, of whichever family wrote it (the file's `format` says which), checked in
    full as that family's `load` checks it; a `ValueError` when it is no memory file of either family."""
    from .modeling.memory_file_flash_vstream import FILE_FORMAT as V1_FORMAT
    from .modeling.memory_flash_vstream import FlashVStreamMemory
    from .modeling.safetensors_file import read_metadata
    from .qwen2vl.memory_flash_vstream_qwen2vl import FILE_FORMAT as V2_FORMAT
    from .qwen2vl.memory_flash_vstream_qwen2vl import FlashVStreamQwen2VLMemory

    classes = {V1_FORMAT: FlashVStreamMemory, V2_FORMAT: FlashVStreamQwen2VLMemory}
    file_format = read_metadata(path).get("format")
    if file_format not in classes:
        raise ValueError(f"{path} is not a Flash-VStream memory file (format {file_format!r})")
    return classes[file_format].load(path)
