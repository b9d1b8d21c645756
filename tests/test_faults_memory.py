"""Fault injection on the memory: non-finite frames, tampered memory files, a save killed half-way."""

import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from flash_vstream_hf import FlashVStreamMemory

from .helpers import assert_same_memory


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_frame_is_refused_and_leaves_the_memory_unchanged(model, frames, bad):
    memory = model.update_memory(frames(30))
    before = memory.state
    pixels = frames(4, seed=1)
    pixels[0, 2, 1, 3, 3] = bad
    with pytest.raises(ValueError, match=r"frame 2 of stream 0 .*not finite.*memory was not changed"):
        model.update_memory(pixels, memory)
    assert memory.state is before
    features = torch.randn(1, 3, 64, model.config.vision_config.hidden_size)
    features[0, 1, 0, 0] = bad
    with pytest.raises(ValueError, match="frame 1 of stream 0"):
        model.update_memory_from_features(features, memory)
    assert memory.state is before
    # the stream goes on with good frames: 40 more of them leave a fully finite read-out
    model.update_memory(frames(40, seed=2), memory)
    assert torch.isfinite(model.model.read_memory(memory)).all()


def saved(model, frames, path, count: int = 30) -> FlashVStreamMemory:
    memory = model.update_memory(frames(count))
    memory.save(path)
    return memory


def tamper(path, change) -> None:
    """Rewrite the memory file at `path` with `change(tensors, metadata)` applied."""
    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata())
        tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    change(tensors, metadata)
    save_file(tensors, str(path), metadata=metadata)


def wrong_shape(tensors, _):
    tensors["temporal"] = tensors["temporal"][:, :-1]


def wrong_dtype(tensors, _):
    tensors["abstract"] = tensors["abstract"].to(torch.int32)


def wrong_batch(tensors, _):
    tensors["current"] = tensors["current"].repeat(2, 1, 1, 1)


def negative_frames(_, metadata):
    metadata["frames_seen"] = "-4"


def absurd_frames(_, metadata):
    metadata["frames_seen"] = "1e400"


def truncated_generator(tensors, _):
    tensors["generator_state"] = tensors["generator_state"][:100]


def extra_tensor(tensors, _):
    tensors["backdoor"] = torch.zeros(3)


def nan_temporal(tensors, _):
    tensors["temporal"] = torch.full_like(tensors["temporal"], float("nan"))


def negative_sizes(tensors, _):
    tensors["temporal_sizes"] = -tensors["temporal_sizes"]


def bad_layout(_, metadata):
    metadata["layout"] = json.dumps({"temporal_length": "many"})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (wrong_shape, "tensor temporal has shape"),
        (wrong_dtype, "tensor abstract has dtype torch.int32"),
        (wrong_batch, "tensor temporal holds 1 streams but current holds 2"),
        (negative_frames, "frames_seen must be an integer >= 0"),
        (absurd_frames, "frames_seen must be an integer >= 0"),
        (truncated_generator, "generator_state is not a k-means generator state"),
        (extra_tensor, r"unexpected tensors \['backdoor'\]"),
        (nan_temporal, "tensor temporal holds NaN or inf"),
        (negative_sizes, "temporal_sizes must be >= 0"),
        (bad_layout, "layout"),
    ],
    ids=lambda value: value.__name__ if callable(value) else None,
)
def test_a_tampered_memory_file_is_refused_naming_what_is_wrong(model, frames, tmp_path, change, message):
    path = tmp_path / "memory.safetensors"
    saved(model, frames, path)
    tamper(path, change)
    with pytest.raises(ValueError, match=message):
        FlashVStreamMemory.load(path)


@pytest.mark.parametrize("count", [1, 3, 30, 120])
@pytest.mark.parametrize("told", [lambda n: n + 1, lambda n: n - 1, lambda n: 2 * n, lambda n: 0, lambda n: n + 1000])
def test_a_memory_file_whose_frame_count_disagrees_with_its_tensors_is_refused(model, frames, tmp_path, count, told):
    path = tmp_path / "memory.safetensors"
    saved(model, frames, path, count=count)
    lie = told(count)
    tamper(path, lambda _, metadata: metadata.update(frames_seen=str(lie)))
    with pytest.raises(ValueError, match=f"frames_seen says {lie} but"):
        FlashVStreamMemory.load(path)


@pytest.mark.parametrize("count", [1, 3, 30, 120])
def test_an_honest_memory_file_passes_the_count_checks(model, frames, tmp_path, count):
    path = tmp_path / "memory.safetensors"
    memory = saved(model, frames, path, count=count)
    assert FlashVStreamMemory.load(path).frames_seen == memory.frames_seen == count


def test_entries_past_the_filled_ones_must_be_empty(model, frames, tmp_path):
    path = tmp_path / "memory.safetensors"
    saved(model, frames, path, count=3)  # the tiny layout holds more temporal entries than 2 frames fill

    def smuggle(tensors, _):
        tensors["temporal"][:, -1] = 1.0

    tamper(path, smuggle)
    with pytest.raises(ValueError, match="temporal holds values past its 2 filled entries"):
        FlashVStreamMemory.load(path)


_SAVER = textwrap.dedent(
    """
    import sys, torch
    from flash_vstream_hf.tiny import tiny_model
    model = tiny_model()
    size = model.config.vision_config.image_size
    memory = model.update_memory(torch.randn(8, 30, 3, size, size))   # 8 streams: a few MB to write
    print("ready", flush=True)
    while True:
        memory.save(sys.argv[1])
    """
)


def test_a_save_killed_half_way_leaves_the_previous_file_loadable(model, frames, tmp_path):
    path = tmp_path / "stream.safetensors"
    previous = saved(model, frames, path)
    saver = subprocess.Popen([sys.executable, "-c", _SAVER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert saver.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 20
        while not list(tmp_path.glob(".stream.safetensors.*.tmp")):  # kill it while a temporary file exists
            assert time.monotonic() < deadline, "the saver never started writing"
        saver.send_signal(signal.SIGKILL)
    finally:
        saver.kill()
        saver.wait()
    loaded = FlashVStreamMemory.load(path)  # the previous file or the complete new one, never a torn one
    assert loaded.frames_seen == 30 and loaded.batch_size in (1, 8)
    if loaded.batch_size == 1:
        assert_same_memory(loaded, previous)
    # the next save sweeps what the killed process left behind
    previous.save(path)
    assert not list(tmp_path.glob(".stream.safetensors.*.tmp"))
