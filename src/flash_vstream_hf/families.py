"""The model families the runtime serves, by the config's `model_type`. Both offer the same streaming interface
(`new_memory`, `check_memory`, `get_frame_features`, `update_memory_from_features`, `generate(video_memory=)`;
processors with `preprocess_frames` and `num_video_tokens=`), so `StreamingSession`, `ask`, `chat`, `serve`, `eval`
and the endpoint handler run either; what differs between them is here."""

from __future__ import annotations

FAMILIES = {
    "flash_vstream": "Flash-VStream (v1: CLIP ViT-L/14 + Vicuna, STAR memory)",
    "flash_vstream_qwen2_vl": "Flash-VStream v2 (Qwen2-VL + Flash Memory)",
}


def memory_class(model) -> type:
    """The memory class of `model`'s family (`FlashVStreamMemory` or `FlashVStreamQwen2VLMemory`): what its memory
    files load with."""
    return type(model.new_memory())
