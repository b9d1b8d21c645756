"""How both families write memory files (atomically, synced before the rename, with the umask's mode, safe from a
second writer of the same path, sweeping what a killed writer left behind), and which family reads one back."""

import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch

from flash_vstream_hf import FlashVStreamMemory
from flash_vstream_hf.qwen2vl import FlashVStreamQwen2VLForConditionalGeneration
from flash_vstream_hf.qwen2vl.memory_flash_vstream_qwen2vl import FlashVStreamQwen2VLMemory
from flash_vstream_hf.tiny import tiny_model

from .test_qwen2vl_model import tiny_config
from .test_qwen2vl_streaming import random_features, streamed

FAMILIES = ["v1", "v2 bounded", "v2 faithful"]


@pytest.fixture(scope="module")
def v1_model():
    return tiny_model().eval()


@pytest.fixture(scope="module")
def v2_model():
    torch.manual_seed(0)
    return FlashVStreamQwen2VLForConditionalGeneration(tiny_config()).eval()


@pytest.fixture
def memory(request, v1_model, v2_model):
    """A memory of a few frames of the family in `request.param`."""
    if request.param == "v1":
        size = v1_model.config.vision_config.image_size
        return v1_model.update_memory(torch.randn(1, 5, 3, size, size, generator=torch.Generator().manual_seed(0)))
    return streamed(v2_model, random_features(5, seed=1), request.param.split()[1])


def memory_class(memory):
    return FlashVStreamMemory if isinstance(memory, FlashVStreamMemory) else FlashVStreamQwen2VLMemory


def leftovers(path):
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


@pytest.mark.parametrize("memory", FAMILIES, indirect=True)
def test_a_saved_file_follows_the_umask(memory, tmp_path):
    old = os.umask(0o022)
    try:
        memory.save(tmp_path / "shared.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "shared.safetensors").stat().st_mode) == 0o644


@pytest.mark.parametrize("memory", FAMILIES, indirect=True)
def test_the_new_file_is_synced_to_disk_before_it_replaces_the_old_one(memory, tmp_path, monkeypatch):
    synced, published = [], []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(source, target):
        published.append((str(source), str(target)))
        assert str(source) in synced, f"{source} was renamed over {target} before it was synced"
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    memory.save(tmp_path / "memory.safetensors")
    assert published and published[-1][1] == str(tmp_path / "memory.safetensors")


@pytest.mark.parametrize("memory", FAMILIES, indirect=True)
def test_threads_saving_the_same_path_at_once_all_succeed(memory, tmp_path):
    path, errors = tmp_path / "memory.safetensors", []

    def save_repeatedly():
        try:
            for _ in range(20):
                memory.save(path)
        except Exception as error:  # noqa: BLE001 (the assertion below reports it)
            errors.append(error)

    threads = [threading.Thread(target=save_repeatedly) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert memory_class(memory).load(path).frames_seen == memory.frames_seen and not leftovers(path)


_SAVER = textwrap.dedent(
    """
    import sys, torch
    from flash_vstream_hf.qwen2vl import FlashVStreamQwen2VLForConditionalGeneration
    from tests.test_qwen2vl_model import tiny_config
    from tests.test_qwen2vl_streaming import random_features
    model = FlashVStreamQwen2VLForConditionalGeneration(tiny_config()).eval()
    memory = model.new_memory(streaming_mode="faithful")
    model.update_memory_from_features(random_features(3000, grid=(8, 8)), memory)  # tens of MB to write
    print("ready", flush=True)
    while True:
        memory.save(sys.argv[1])
    """
)


def test_a_v2_save_killed_half_way_leaves_the_previous_file_and_the_next_save_sweeps_its_leftover(v2_model, tmp_path):
    path = tmp_path / "stream.safetensors"
    previous = streamed(v2_model, random_features(5, seed=1), "faithful")
    previous.save(path)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    saver = subprocess.Popen([sys.executable, "-c", _SAVER, str(path)], stdout=subprocess.PIPE, text=True, cwd=root)
    try:
        assert saver.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 30
        while True:  # stop it while a temporary file exists (stopped, it cannot rename it), then kill it
            assert time.monotonic() < deadline, "the saver was never caught writing"
            if leftovers(path):
                saver.send_signal(signal.SIGSTOP)
                if leftovers(path):
                    break
                saver.send_signal(signal.SIGCONT)
        saver.kill()
    finally:
        saver.kill()
        saver.wait()
    assert leftovers(path), "the killed writer left nothing behind: the sweep below would prove nothing"
    loaded = FlashVStreamQwen2VLMemory.load(path)  # the previous file or the complete new one, never a torn one
    assert loaded.frames_seen in (5, 3000)
    previous.save(path)
    assert not leftovers(path) and FlashVStreamQwen2VLMemory.load(path).frames_seen == 5


@pytest.mark.parametrize("memory", FAMILIES, indirect=True)
def test_a_memory_file_loads_with_the_family_that_wrote_it(memory, tmp_path):
    from flash_vstream_hf.families import load_memory

    memory.save(tmp_path / "memory.safetensors")
    loaded = load_memory(tmp_path / "memory.safetensors")
    assert type(loaded) is memory_class(memory) and loaded.frames_seen == memory.frames_seen


def test_a_file_of_neither_family_is_refused_naming_its_format(tmp_path):
    from safetensors.torch import save_file

    from flash_vstream_hf.families import load_memory

    save_file({"weight": torch.zeros(2)}, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="not a Flash-VStream memory file \\(format 'pt'\\)"):
        load_memory(tmp_path / "model.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match="not a readable safetensors memory file"):
        load_memory(tmp_path / "junk.safetensors")
