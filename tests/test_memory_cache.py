"""`FlashVStreamMemory`: bounded, incremental, snapshot-safe, deterministic, saved and resumed exactly."""

import threading

import pytest
import torch

from flash_vstream_hf import FlashVStreamMemory
from flash_vstream_hf.tiny import tiny_config, tiny_model

from .helpers import assert_same_memory


def features(config, count: int, seed: int = 0, batch: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    tokens = config.patch_grid_size**2
    return torch.randn(batch, count, tokens, config.vision_config.hidden_size, generator=generator)


def stream(model, feats: torch.Tensor, chunk: int, memory=None):
    for start in range(0, feats.shape[1], chunk):
        memory = model.update_memory_from_features(feats[:, start : start + chunk], memory)
    return memory


def test_size_is_the_same_after_40_and_10000_frames(model, config):
    small = stream(model, features(config, 40), chunk=1)
    large = stream(model, features(config, 10_000, seed=1), chunk=500)
    assert small.nbytes == large.nbytes
    assert large.frames_seen == 10_000
    assert large.get_seq_length() == small.get_seq_length() == model.star_layout.num_tokens(10_000)


def test_update_accepts_one_frame_or_many(model, frames):
    one_by_one = None
    for index in range(5):
        one_by_one = model.update_memory(frames(5)[:, index : index + 1], one_by_one)
    all_at_once = model.update_memory(frames(5))
    assert_same_memory(one_by_one, all_at_once)  # no k-means yet: every path gives the same memory


def test_same_frames_and_seed_give_a_bit_identical_memory(config):
    feats = features(config, 60)
    first = stream(tiny_model(config), feats, chunk=7)
    second = stream(tiny_model(config), feats, chunk=7)
    assert_same_memory(first, second)
    other_seed = stream(tiny_model(tiny_config(memory_seed=1)), feats, chunk=7)
    assert not torch.equal(first.state.temporal, other_seed.state.temporal)


def test_snapshot_is_frozen_while_the_memory_moves_on(model, config):
    memory = stream(model, features(config, 12), chunk=4)
    snapshot = memory.snapshot()
    before = {name: t.clone() for name, t in snapshot.state.tensors().items()}
    stream(model, features(config, 30, seed=2), chunk=3, memory=memory)
    assert memory.frames_seen == 42 and snapshot.frames_seen == 12
    for name, tensor in snapshot.state.tensors().items():
        assert torch.equal(tensor, before[name]), name


def test_readers_see_consistent_snapshots_while_a_writer_ingests(model, config):
    memory = stream(model, features(config, 3), chunk=3)
    feats = features(config, 120, seed=3)
    errors = []

    def read():
        for _ in range(60):
            snapshot = memory.snapshot()
            tokens = model.model.read_memory(snapshot)
            if tokens.shape[1] != snapshot.get_seq_length() or not torch.isfinite(tokens).all():
                errors.append((snapshot.frames_seen, tokens.shape))

    reader = threading.Thread(target=read)
    reader.start()
    stream(model, feats, chunk=2, memory=memory)
    reader.join(timeout=60)
    assert not reader.is_alive() and not errors


def test_saved_memory_resumes_exactly_as_the_uninterrupted_stream(model, config, tmp_path):
    feats = features(config, 50)
    uninterrupted = stream(model, feats, chunk=5)
    first_half = stream(model, feats[:, :25], chunk=5)
    first_half.save(tmp_path / "memory.safetensors")
    resumed = stream(model, feats[:, 25:], chunk=5, memory=FlashVStreamMemory.load(tmp_path / "memory.safetensors"))
    assert_same_memory(resumed, uninterrupted)


def test_save_replaces_the_file_atomically(model, config, tmp_path):
    path = tmp_path / "memory.safetensors"
    memory = stream(model, features(config, 8), chunk=8)
    memory.save(path)
    stream(model, features(config, 8, seed=1), chunk=8, memory=memory)
    memory.save(path)
    assert FlashVStreamMemory.load(path).frames_seen == 16
    assert [p.name for p in tmp_path.iterdir()] == ["memory.safetensors"]  # no temporary file left behind


def test_loading_bad_files_raises_clear_errors(tmp_path, model, config):
    with pytest.raises(FileNotFoundError, match="no memory file"):
        FlashVStreamMemory.load(tmp_path / "missing.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="not a readable safetensors memory file"):
        FlashVStreamMemory.load(corrupt)
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2)}, str(tmp_path / "weights.safetensors"))
    with pytest.raises(ValueError, match="not a Flash-VStream memory file"):
        FlashVStreamMemory.load(tmp_path / "weights.safetensors")


def test_memory_of_another_config_is_rejected(model, config):
    other = tiny_model(tiny_config(temporal_length=8))
    foreign = stream(other, features(config, 4), chunk=4)
    with pytest.raises(ValueError, match="temporal_length: 8 != 5"):
        model.update_memory_from_features(features(config, 1), foreign)
    with pytest.raises(ValueError, match="another model config"):
        model.get_video_features(video_memory=foreign)


def test_a_batch_of_streams_keeps_them_apart(model, config):
    feats = features(config, 6, batch=2)  # 5 past frames: no k-means, so each stream is deterministic alone
    batch = stream(model, feats, chunk=2)
    assert batch.batch_size == 2
    for b in range(2):
        single = stream(model, feats[b : b + 1], chunk=2)
        for name, tensor in batch.state.tensors().items():
            if name != "generator_state":
                assert torch.equal(tensor[b : b + 1], getattr(single.state, name)), name
    with pytest.raises(ValueError, match="holds 2"):
        model.update_memory_from_features(features(config, 1), batch)


def test_batch_selection_reordering_and_repetition(model, config):
    memory = stream(model, features(config, 6, batch=3), chunk=6)
    current = memory.state.current.clone()
    reordered = memory.snapshot()
    reordered.reorder_cache(torch.tensor([2, 0, 1]))
    assert torch.equal(reordered.state.current, current[[2, 0, 1]])
    selected = memory.snapshot()
    selected.batch_select_indices([1])
    assert selected.batch_size == 1 and torch.equal(selected.state.current, current[1:2])
    repeated = selected.snapshot()
    repeated.batch_repeat_interleave(2)
    assert torch.equal(repeated.state.current, current[[1, 1]])
    with pytest.raises(IndexError):
        selected.batch_select_indices([3])


def test_to_changes_dtype_but_keeps_sizes_float32_and_reset_forgets(model, config):
    memory = stream(model, features(config, 9), chunk=9)
    memory.to(dtype=torch.bfloat16)
    assert memory.dtype == torch.bfloat16 and memory.state.temporal_sizes.dtype == torch.float32
    memory.reset()
    assert memory.frames_seen == 0 and memory.get_seq_length() == 0 and memory.state.current.abs().sum() == 0
