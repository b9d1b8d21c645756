"""Fault injection on loading: `flash-vstream ask`/`chat --model` and `flash-vstream convert --input` given a
missing folder or damaged files answer with one line naming the path and what is wrong, and a non-zero exit
status; never a traceback, and a pickled `.bin` never runs its code."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers.utils import logging as hf_logging

from flash_vstream_hf.cli import main
from flash_vstream_hf.tiny import tiny_config, tiny_model, tiny_processor
from flash_vstream_hf.tiny.qwen2vl import save_tiny_qwen2vl

from .original_layout import build_original_model, write_checkpoint, write_clip_folder

# -- flash-vstream ask / chat --model --------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["v1", "v2"])
def saved(tmp_path_factory, request) -> Path:
    """A folder holding a tiny model and processor of each family, as `flash-vstream convert` (v1) or
    `save_pretrained` (v2) writes one."""
    folder = tmp_path_factory.mktemp("saved") / "model"
    if request.param == "v2":
        return Path(save_tiny_qwen2vl(folder))
    config = tiny_config()
    tiny_model(config).save_pretrained(folder)
    tiny_processor(config).save_pretrained(folder)
    return folder


@pytest.fixture
def damaged(saved, tmp_path):
    """`damage(how)`: a copy of the saved folder, damaged by `how(folder)`; returns the folder."""

    def damage(how) -> Path:
        folder = tmp_path / "model"
        shutil.copytree(saved, folder)
        how(folder)
        return folder

    return damage


def truncate(path: Path, keep: float = 0.5) -> None:
    os.truncate(path, int(path.stat().st_size * keep))


def cli_error(argv: list[str], capsys) -> str:
    """The one line `flash-vstream` prints on stderr when it exits with a non-zero status."""
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code not in (0, None)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and lines, err
    return lines[-1]


def ask(model: str | Path) -> list[str]:
    return ["ask", "video.mp4", "--model", str(model), "--device", "cpu", "--at", "1", "Anything?"]


def chat(model: str | Path) -> list[str]:
    return ["chat", "video.mp4", "--model", str(model), "--device", "cpu"]


def shard_index(folder: Path, shards: list[str]) -> None:
    weight_map = {"lm_head.weight": shards[0], "model.language_model.norm.weight": shards[-1]}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


BROKEN_FOLDERS = {
    "config.json not JSON": (
        lambda f: (f / "config.json").write_text('{"model_type": "flash_vs'), "config.json", "not valid JSON"),
    "config.json not an object": (lambda f: (f / "config.json").write_text("[]"), "config.json", "not a JSON object"),
    "config.json of another model": (
        lambda f: (f / "config.json").write_text('{"model_type": "vstream"}'), "config.json", "flash-vstream convert"),
    "no config.json": (lambda f: (f / "config.json").unlink(), "model", "no config.json"),
    "truncated model.safetensors": (lambda f: truncate(f / "model.safetensors"), "model.safetensors", "truncated"),
    "model.safetensors emptied": (lambda f: truncate(f / "model.safetensors", 0), "model.safetensors", "truncated"),
    "no weights": (lambda f: (f / "model.safetensors").unlink(), "model", "no model weights"),
    "index naming a missing shard": (
        lambda f: [(f / "model.safetensors").rename(f / "model-00001-of-00002.safetensors"),
                   shard_index(f, ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"])],
        "model-00002-of-00002.safetensors", "missing"),
    "processor_config.json not JSON": (
        lambda f: (f / "processor_config.json").write_text("{"), "processor_config.json", "not valid JSON"),
    "tokenizer.json truncated": (lambda f: truncate(f / "tokenizer.json"), "tokenizer.json", "not valid JSON"),
}  # fmt: skip


@pytest.mark.parametrize("how, named, what", BROKEN_FOLDERS.values(), ids=BROKEN_FOLDERS.keys())
def test_a_damaged_model_folder_is_one_clear_line(damaged, capsys, how, named, what):
    folder = damaged(how)
    line = cli_error(ask(folder), capsys)
    assert line.startswith("flash-vstream ask: error: ") and str(folder) in line, line
    assert named in line and what in line, line


@pytest.mark.parametrize("command", [ask, chat], ids=["ask", "chat"])
def test_a_missing_model_folder_is_one_clear_line(tmp_path, capsys, command):
    missing = tmp_path / "no" / "such" / "model"
    line = cli_error(command(missing), capsys)
    assert str(missing) in line and "no such folder" in line and "Repo id" not in line, line


def test_a_file_given_as_the_model_folder_is_one_clear_line(saved, capsys):
    line = cli_error(ask(saved / "config.json"), capsys)
    assert f"{saved / 'config.json'}" in line and "not a folder" in line, line


def test_a_hub_id_that_cannot_be_loaded_is_one_clear_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # never reach the Hub
    line = cli_error(ask("someone/no-such-model"), capsys)
    assert "someone/no-such-model" in line and "could not load" in line, line


def test_the_cli_prints_no_traceback_for_a_truncated_model(damaged):
    folder = damaged(lambda f: truncate(f / "model.safetensors"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "flash_vstream_hf", *ask(folder)], capture_output=True, text=True, env=env,
        timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert (
        result.stderr.strip().splitlines()[-1].startswith(f"flash-vstream ask: error: {folder / 'model.safetensors'}")
    )


def test_a_good_folder_still_loads(saved):
    from flash_vstream_hf.commands.common import check_model_folder

    check_model_folder(saved)  # no error


# -- flash-vstream convert --input ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    root = tmp_path_factory.mktemp("original")
    write_clip_folder(root / "clip")
    return root, build_original_model(seed=0)


@pytest.fixture
def quiet():
    """No progress bar on stderr, so the error is the last line there."""
    before = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    yield
    (hf_logging.enable_progress_bar if before else hf_logging.disable_progress_bar)()


class RunsCode:
    """Unpickling this runs `touch marker`: what `torch.load(weights_only=True)` must refuse."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def malicious_pickle(folder: Path, marker: Path) -> None:
    with open(folder / "pytorch_model-00001-of-00002.bin", "wb") as handle:
        pickle.dump({"model.embed_tokens.weight": RunsCode(marker)}, handle, protocol=2)  # the legacy format


def malicious_zip(folder: Path, marker: Path) -> None:
    torch.save({"model.embed_tokens.weight": RunsCode(marker)}, folder / "pytorch_model-00001-of-00002.bin")


def first_safetensors(folder: Path) -> Path:
    return folder / "model-00001-of-00002.safetensors"


DAMAGED_CHECKPOINTS = {
    "truncated safetensors shard": (
        "safetensors", lambda f, m: truncate(first_safetensors(f)), "model-00001-of-00002.safetensors", "truncated"),
    "safetensors shard of zeros": (
        "safetensors", lambda f, m: first_safetensors(f).write_bytes(bytes(64)), "model-00001-of-00002.safetensors",
        "truncated"),
    "malformed index": (
        "safetensors", lambda f, m: (f / "model.safetensors.index.json").write_text('{"weight_map": {"a": '),
        "model.safetensors.index.json", "not valid JSON"),
    "index without weight_map": (
        "safetensors", lambda f, m: (f / "model.safetensors.index.json").write_text('{"metadata": {}}'),
        "model.safetensors.index.json", "weight_map"),
    "index mapping to a number": (
        "safetensors", lambda f, m: (f / "model.safetensors.index.json").write_text('{"weight_map": {"a": 1}}'),
        "model.safetensors.index.json", "weight_map"),
    "config.json not JSON": (
        "bin", lambda f, m: (f / "config.json").write_text("{nope"), "config.json", "not valid JSON"),
    "pickle .bin running code": (
        "bin", malicious_pickle, "pytorch_model-00001-of-00002.bin", "weights_only"),
    "zip .bin running code": ("bin", malicious_zip, "pytorch_model-00001-of-00002.bin", "weights_only"),
    "truncated .bin": (
        "bin", lambda f, m: truncate(f / "pytorch_model-00001-of-00002.bin"), "pytorch_model-00001-of-00002.bin",
        "damaged"),
    ".bin holding a list": (
        "bin", lambda f, m: torch.save([torch.zeros(2)], f / "pytorch_model-00001-of-00002.bin"),
        "pytorch_model-00001-of-00002.bin", "state dict"),
}  # fmt: skip


@pytest.mark.parametrize("fmt, how, named, what", DAMAGED_CHECKPOINTS.values(), ids=DAMAGED_CHECKPOINTS.keys())
def test_a_damaged_checkpoint_is_one_clear_convert_error(original, tmp_path, capsys, quiet, fmt, how, named, what):
    root, model = original
    folder = write_checkpoint(model, tmp_path / "original", fmt=fmt, num_shards=2)
    marker = tmp_path / "pickle-ran"
    how(folder, marker)
    out = tmp_path / "out"
    code = main(["convert", "--input", str(folder), "--output", str(out), "--vision-tower", str(root / "clip")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("flash-vstream convert: error: ") and str(folder / named) in line, line
    assert what in line, line
    assert not marker.exists(), "torch.load ran the pickled code"
    assert not out.exists() or not any(out.iterdir())
