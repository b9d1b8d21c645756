"""The warm-up of a loaded model before threads share it: once per model and process, under a per-model lock.

The first forward of a module may change it (bitsandbytes repacks 4-bit weights on CPU, kernels get selected), so
it must not run from two threads at once. After the warm-up, sessions sharing the model run the vision tower and
generate() concurrently: both are pure forwards.
"""

from __future__ import annotations

import threading
import time
import weakref

import torch

from .answering import StreamSnapshot, generate_answer

# One lock per loaded model, for its warm-up, and the models already warm (weak: a model can still be freed).
_MODEL_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_WARM_MODELS: weakref.WeakSet = weakref.WeakSet()
_REGISTRY_LOCK = threading.Lock()


def ensure_warm(model, processor) -> None:
    """Run `model` once (one blank frame, one generated token) unless it has run in this process already."""
    with _REGISTRY_LOCK:
        lock = _MODEL_LOCKS.setdefault(model, threading.Lock())
    with lock:
        if model in _WARM_MODELS:
            return
        size = model.config.vision_config.image_size
        with torch.no_grad():
            scratch = model.update_memory(torch.zeros(1, 1, 3, size, size))
        snapshot = StreamSnapshot(scratch, 0.0)
        generate_answer(model, processor, "warm up", snapshot, {"max_new_tokens": 1}, time.perf_counter())
        _WARM_MODELS.add(model)


__all__ = ["ensure_warm"]
