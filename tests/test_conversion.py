"""`flash-vstream convert`: key accounting, weights, config, vocabulary, generation config, inputs and errors."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from transformers.utils import logging as hf_logging

from flash_vstream_hf import FlashVStreamForConditionalGeneration
from flash_vstream_hf.cli import main
from flash_vstream_hf.conversion import convert_checkpoint
from flash_vstream_hf.conversion.mapping import VISION_PREFIX

from .original_layout import SP_VOCAB_SIZE, build_original_model, write_checkpoint, write_clip_folder


@pytest.fixture(scope="module")
def original():
    return build_original_model(seed=0)


@pytest.fixture(scope="module")
def checkpoint(original, tmp_path_factory):
    root = tmp_path_factory.mktemp("conversion")
    write_checkpoint(original, root / "original", fmt="bin", num_shards=2)
    clip = write_clip_folder(root / "clip")
    return root, clip


@pytest.fixture(scope="module")
def converted(checkpoint):
    root, _ = checkpoint
    report = convert_checkpoint(str(root / "original"), root / "fp32", vision_tower=str(root / "clip"), dtype="float32")
    return report, FlashVStreamForConditionalGeneration.from_pretrained(root / "fp32")


def test_every_original_tensor_is_used_once_or_dropped_with_a_reason(original, converted):
    report, model = converted
    original_keys = set(original.state_dict())
    dropped = {key: reason for reason, keys in report.dropped.items() for key in keys}
    assert {k for k in dropped if "rotary_emb.inv_freq" in k} == {
        f"model.layers.{i}.self_attn.rotary_emb.inv_freq" for i in range(2)
    }
    assert {k for k in dropped if k.startswith("model.attention_model.")} == {
        f"model.attention_model.{m}.{p}" for m in ("v_proj", "out_proj", "out_ln") for p in ("weight", "bias")
    }
    assert {k for k in dropped if k.startswith(VISION_PREFIX)} == {
        k for k in original_keys if k.startswith(VISION_PREFIX)
    }
    assert all(reason for reason in dropped.values())
    # everything else became exactly one model tensor; the vision tower came from --vision-tower
    used = original_keys - set(dropped)
    vision = {k for k in model.state_dict() if k.startswith("model.vision_tower.")}
    assert len(used) + len(vision) == len(model.state_dict()) == report.tensors_written


def test_weights_are_the_original_tensors(original, checkpoint, converted):
    _, clip = checkpoint
    _, model = converted
    ours = model.state_dict()
    names = {
        "model.language_model.layers.1.self_attn.o_proj.weight": "model.layers.1.self_attn.o_proj.weight",
        "model.language_model.norm.weight": "model.norm.weight",
        "model.multi_modal_projector.linear_1.weight": "model.mm_projector.0.weight",
        "model.multi_modal_projector.linear_2.bias": "model.mm_projector.2.bias",
        "model.abstract_memory_attention.q_proj.weight": "model.attention_model.q_proj.weight",
        "model.abstract_memory_attention.k_proj.bias": "model.attention_model.k_proj.bias",
    }
    state = original.state_dict()
    for new, old in names.items():
        assert torch.equal(ours[new], state[old]), new
    for new, old in (
        ("model.language_model.embed_tokens.weight", "model.embed_tokens.weight"),
        ("lm_head.weight", "lm_head.weight"),
    ):
        assert torch.equal(ours[new][:SP_VOCAB_SIZE], state[old])
    # CLIP comes from --vision-tower, not from the (different) copy embedded in the checkpoint
    for name, tensor in clip.state_dict().items():
        assert torch.equal(ours[f"model.vision_tower.{name}"], tensor), name
    embedded = state[VISION_PREFIX + "embeddings.patch_embedding.weight"]
    assert not torch.equal(ours["model.vision_tower.embeddings.patch_embedding.weight"], embedded)


def test_vocabulary_grows_to_a_multiple_of_64_with_mean_rows(original, converted):
    report, model = converted
    assert report.original_vocab_size == SP_VOCAB_SIZE
    assert model.config.video_token_id == report.video_token_id == SP_VOCAB_SIZE
    assert model.config.text_config.vocab_size == report.vocab_size == 448
    state = original.state_dict()
    for new, old in (
        ("model.language_model.embed_tokens.weight", "model.embed_tokens.weight"),
        ("lm_head.weight", "lm_head.weight"),
    ):
        grown = model.state_dict()[new]
        assert grown.shape == (448, 64)
        torch.testing.assert_close(grown[SP_VOCAB_SIZE:], state[old].mean(0).expand(48, -1))


def test_config_maps_the_original_fields(converted):
    _, model = converted
    config = model.config
    star = {name: getattr(config, name) for name in (
        "spatial_pool_size", "temporal_pool_size", "abstract_pool_size", "spatial_length", "temporal_length",
        "abstract_length", "retrieved_length", "abstract_update_ratio", "abstract_hidden_size", "retrieval_mode",
        "vision_feature_layer", "kmeans_max_iter", "kmeans_tol")}  # fmt: skip
    assert star == {
        "spatial_pool_size": 8, "temporal_pool_size": 4, "abstract_pool_size": 1, "spatial_length": 1,
        "temporal_length": 25, "abstract_length": 25, "retrieved_length": 3, "abstract_update_ratio": 0.2,
        "abstract_hidden_size": 16, "retrieval_mode": "original", "vision_feature_layer": -2,
        "kmeans_max_iter": 10, "kmeans_tol": 1e-4,
    }  # fmt: skip
    assert config.patch_grid_size == 16
    assert config.text_config.initializer_range == 0.2 and config.text_config.num_key_value_heads == 4
    assert config.architectures == ["FlashVStreamForConditionalGeneration"]


def test_generation_config_suppresses_video_and_padding_ids(checkpoint, converted):
    root, _ = checkpoint
    report, model = converted
    generation = json.loads((root / "fp32" / "generation_config.json").read_text())
    assert generation["suppress_tokens"] == list(range(SP_VOCAB_SIZE, 448))
    assert (generation["max_length"], generation["bos_token_id"], generation["eos_token_id"]) == (4096, 1, 2)
    assert "temperature" not in generation and any("temperature" in note for note in report.notes)
    # make every new id the most likely next token: still never generated
    model = FlashVStreamForConditionalGeneration.from_pretrained(root / "fp32")
    prompt = torch.tensor([[1, 50, 60]])
    with torch.no_grad():
        hidden = model.model(input_ids=prompt).last_hidden_state[0, -1]
        model.lm_head.weight[SP_VOCAB_SIZE:] = 100 * hidden / hidden.norm()
    unsuppressed = model.generate(prompt, max_new_tokens=1, do_sample=False, suppress_tokens=[])
    assert SP_VOCAB_SIZE < unsuppressed[0, -1] < 448  # <video> itself is always suppressed by the model
    assert model.generate(prompt, max_new_tokens=1, do_sample=False)[0, -1] < SP_VOCAB_SIZE


def test_default_dtype_is_bfloat16(original, checkpoint):
    root, _ = checkpoint
    report = convert_checkpoint(str(root / "original"), root / "bf16", vision_tower=str(root / "clip"))
    assert report.dtype == torch.bfloat16
    model = FlashVStreamForConditionalGeneration.from_pretrained(root / "bf16")
    assert model.dtype == torch.bfloat16 and {p.dtype for p in model.parameters()} == {torch.bfloat16}
    expected = original.state_dict()["model.layers.0.mlp.up_proj.weight"].to(torch.bfloat16)
    assert torch.equal(model.state_dict()["model.language_model.layers.0.mlp.up_proj.weight"], expected)


def test_safetensors_input_and_sharded_output(original, checkpoint, converted, tmp_path):
    root, _ = checkpoint
    write_checkpoint(original, tmp_path / "original", fmt="safetensors", num_shards=3)
    report = convert_checkpoint(
        str(tmp_path / "original"), tmp_path / "out", vision_tower=str(root / "clip"), dtype="float32",
        max_shard_size="200KB",
    )  # fmt: skip
    assert len(report.shards) > 1 and (tmp_path / "out" / "model.safetensors.index.json").is_file()
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())["weight_map"]
    assert set(index.values()) == set(report.shards) and not list((tmp_path / "out").glob("*.partial"))
    for shard in report.shards:
        with safe_open(tmp_path / "out" / shard, "pt") as handle:
            assert all(index[key] == shard for key in handle.keys())  # noqa: SIM118 (safe_open is not iterable)
    reloaded = FlashVStreamForConditionalGeneration.from_pretrained(tmp_path / "out").state_dict()
    reference = converted[1].state_dict()
    assert reloaded.keys() == reference.keys()
    assert all(torch.equal(reloaded[k], reference[k]) for k in reference)


def test_vision_tower_from_the_checkpoint(original, checkpoint, tmp_path):
    root, _ = checkpoint
    report = convert_checkpoint(
        str(root / "original"), tmp_path / "out", vision_tower_from_checkpoint=True, dtype="float32"
    )
    model = FlashVStreamForConditionalGeneration.from_pretrained(tmp_path / "out")
    vision = original.embedded_clip
    # the architecture is read from the shapes (64-dim heads, as in OpenAI CLIP)
    for name in (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "image_size",
        "patch_size",
    ):
        assert getattr(model.config.vision_config, name) == getattr(vision.config, name), name
    for name, tensor in vision.state_dict().items():
        assert torch.equal(model.state_dict()[f"model.vision_tower.{name}"], tensor), name
    assert not any(k.startswith(VISION_PREFIX + "encoder") for keys in report.dropped.values() for k in keys)
    # and so the frame features are the embedded CLIP's: layer -2 without CLS, 16x16 pooled to 8x8
    pixels = torch.randn(1, 2, 3, 64, 64)
    with torch.no_grad():
        patches = vision(pixels[0], output_hidden_states=True).hidden_states[-2][:, 1:]  # [2, 256, D]
        features = model.model.get_frame_features(pixels)[0]  # [2, 64, D]
    grid = patches.view(2, 16, 16, -1).permute(0, 3, 1, 2)
    expected = torch.nn.functional.avg_pool2d(grid, 2).permute(0, 2, 3, 1).reshape(2, 64, -1)
    torch.testing.assert_close(features, expected)


def test_cli_converts_and_dry_run_lists_the_upload(checkpoint, tmp_path, capsys):
    root, _ = checkpoint
    out = tmp_path / "cli"
    code = main([
        "convert", "--input", str(root / "original"), "--output", str(out), "--vision-tower", str(root / "clip"),
        "--dtype", "float16", "--push-to-hub", "someone/flash-vstream-tiny", "--dry-run",
    ])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    assert "dropped 6 tensor(s)" in printed and "would upload" in printed and "someone/flash-vstream-tiny" in printed
    for name in ("model.safetensors", "config.json", "modeling_flash_vstream.py", "handler.py", "README.md"):
        assert f"  {name}  " in printed
    assert FlashVStreamForConditionalGeneration.from_pretrained(out).dtype == torch.float16


def test_cli_checks_the_push_to_hub_repo_id_before_converting(checkpoint, tmp_path, capsys):
    root, _ = checkpoint
    out = tmp_path / "cli"
    code = main(["convert", "--input", str(root / "original"), "--output", str(out), "--push-to-hub", "not a repo"])
    assert code == 1 and "not a Hub repo id" in capsys.readouterr().err
    assert not out.exists()


# -- progress -----------------------------------------------------------------------------------------------------


@pytest.fixture
def progress_bars():
    """`set(enabled)`: switch transformers' progress bars (as `transformers.utils.logging` does); restored after."""
    before = hf_logging.is_progress_bar_enabled()

    def switch(enabled: bool) -> None:
        (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()

    yield switch
    switch(before)


def tensors_read(report) -> int:
    """Every tensor of the original checkpoint (written or dropped) plus the CLIP tensors of --vision-tower."""
    return report.tensors_written + sum(len(keys) for keys in report.dropped.values())


def test_convert_shows_a_progress_bar_on_stderr(checkpoint, tmp_path, capsys, progress_bars):
    root, _ = checkpoint
    progress_bars(True)
    report = convert_checkpoint(str(root / "original"), tmp_path / "out", vision_tower=str(root / "clip"))
    captured = capsys.readouterr()
    total = tensors_read(report)
    assert "Converting: 100%" in captured.err and f"{total}/{total}" in captured.err
    assert "Converting" not in captured.out


def test_convert_progress_bar_follows_transformers_switch(checkpoint, tmp_path, capsys, progress_bars):
    root, _ = checkpoint
    progress_bars(False)
    convert_checkpoint(str(root / "original"), tmp_path / "out", vision_tower=str(root / "clip"))
    assert "Converting" not in capsys.readouterr().err


def test_cli_convert_progress_bar_off_with_hf_hub_disable_progress_bars(checkpoint, tmp_path):
    root, _ = checkpoint
    command = [sys.executable, "-m", "flash_vstream_hf", "convert", "--input", str(root / "original"),
               "--vision-tower", str(root / "clip")]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
    shown = subprocess.run(
        [*command, "--output", str(tmp_path / "a")], capture_output=True, text=True, env=env, check=False
    )
    hidden = subprocess.run(
        [*command, "--output", str(tmp_path / "b")], capture_output=True, text=True, check=False,
        env={**env, "HF_HUB_DISABLE_PROGRESS_BARS": "1"},
    )  # fmt: skip
    assert shown.returncode == hidden.returncode == 0, shown.stderr[-2000:] + hidden.stderr[-2000:]
    assert "Converting: 100%" in shown.stderr
    assert "Converting" not in hidden.stderr and "%|" not in hidden.stderr


# -- errors -------------------------------------------------------------------------------------------------------


def convert_state(tmp_path, checkpoint, original, state=None, **config_overrides):
    root, _ = checkpoint
    model = original
    if config_overrides:
        model = build_original_model(seed=0, **config_overrides)
    write_checkpoint(model, tmp_path / "original", state=state)
    return convert_checkpoint(str(tmp_path / "original"), tmp_path / "out", vision_tower=str(root / "clip"))


def test_unexpected_key_is_an_error(original, checkpoint, tmp_path):
    state = original.state_dict()
    state["model.mm_resampler.weight"] = torch.zeros(2)
    with pytest.raises(ValueError, match=r"match no conversion rule.*model\.mm_resampler\.weight"):
        convert_state(tmp_path, checkpoint, original, state)


def test_missing_key_is_an_error(original, checkpoint, tmp_path):
    state = original.state_dict()
    del state["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(ValueError, match=r"missing keys \['model\.language_model\.layers\.1\.mlp\.up_proj\.weight'\]"):
        convert_state(tmp_path, checkpoint, original, state)
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_wrong_shape_is_an_error_and_leaves_no_partial_shard(original, checkpoint, tmp_path):
    state = original.state_dict()
    state["model.mm_projector.2.weight"] = torch.zeros(64, 32)
    with pytest.raises(ValueError, match=r"multi_modal_projector\.linear_2\.weight has shape \(64, 32\)"):
        convert_state(tmp_path, checkpoint, original, state)
    assert not list((tmp_path / "out").glob("*.partial"))


@pytest.mark.parametrize("extra_rows", [-1, 1], ids=["one row short", "one row long"])
def test_an_lm_head_that_does_not_match_the_vocabulary_is_an_error(original, checkpoint, tmp_path, extra_rows):
    """It used to be padded with mean rows to the grown vocabulary, so a checkpoint one row short converted."""
    state = original.state_dict()
    head = state["lm_head.weight"]
    state["lm_head.weight"] = torch.cat([head, head[:1]]) if extra_rows > 0 else head[:-1].clone()
    rows = SP_VOCAB_SIZE + extra_rows
    expected = rf"lm_head\.weight has shape \({rows}, 64\) but model\.embed_tokens\.weight has \({SP_VOCAB_SIZE}, 64\)"
    with pytest.raises(ValueError, match=expected):
        convert_state(tmp_path, checkpoint, original, state)
    assert not (tmp_path / "out").exists()  # checked before anything is written


# Converts with a kill -9 at `point`: right after the first output shard is written, or once the weights and
# config are in place but not the processor (the moment a half-written folder would load as a model).
KILLED_CONVERT = """
import os, signal, sys
from flash_vstream_hf.conversion import convert, writer

source, output, clip, point = sys.argv[1:5]
def kill(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
if point == "shard":
    flush = writer.ShardedSafetensorsWriter._flush
    writer.ShardedSafetensorsWriter._flush = lambda self: (flush(self), kill())
else:
    convert.save_processor = kill
convert.convert_checkpoint(source, output, vision_tower=clip, dtype="float32", max_shard_size="200KB")
"""


@pytest.mark.parametrize("point, output_exists", [("shard", False), ("processor", True)])
def test_a_killed_convert_leaves_no_output_that_loads(checkpoint, tmp_path, point, output_exists):
    root, _ = checkpoint
    out = tmp_path / "out"
    if output_exists:
        out.mkdir()  # an empty folder given as --output stays empty
    command = [sys.executable, "-c", KILLED_CONVERT, str(root / "original"), str(out), str(root / "clip"), point]
    killed = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert (out.is_dir() and not any(out.iterdir())) if output_exists else not out.exists()
    with pytest.raises(OSError):
        FlashVStreamForConditionalGeneration.from_pretrained(out)
    # what is left is a hidden staging folder next to it, which the next conversion points out
    leftovers = list(tmp_path.glob(".out.converting-*"))
    assert len(leftovers) == 1 and not list(tmp_path.glob("*.partial"))
    report = convert_checkpoint(str(root / "original"), out, vision_tower=str(root / "clip"), dtype="float32")
    assert any(str(leftovers[0]) in note for note in report.notes), report.notes
    assert FlashVStreamForConditionalGeneration.from_pretrained(out).config.video_token_id == SP_VOCAB_SIZE
    # not deleted for the user: another conversion into the same folder may still be writing it
    assert list(tmp_path.glob(".out.converting-*")) == leftovers


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mm_use_4_vision_tokens", True),
        ("video_sample_type", "kmeans"),
        ("compress_type", None),
        ("mm_vision_select_feature", "cls_patch"),
        ("mm_projector_type", "linear"),
        ("mm_use_im_start_end", True),
        ("model_type", "llava"),
    ],
)
def test_unsupported_settings_are_errors(original, checkpoint, tmp_path, field, value):
    with pytest.raises(ValueError, match=field):
        convert_state(tmp_path, checkpoint, original, **{field: value})


def test_output_must_be_new_or_empty(checkpoint, tmp_path):
    root, _ = checkpoint
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        convert_checkpoint(str(root / "original"), tmp_path / "out", vision_tower=str(root / "clip"))


def test_folder_without_weights_is_an_error(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="holds no weights"):
        convert_checkpoint(str(tmp_path), tmp_path / "out")
    assert main(["convert", "--input", str(tmp_path), "--output", str(tmp_path / "out")]) == 1
    assert "error:" in capsys.readouterr().err


def test_hub_repo_id_fails_clearly_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match=r"could not download 'IVGSZ/Flash-VStream-7b'"):
        convert_checkpoint("IVGSZ/Flash-VStream-7b", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="neither an existing folder nor a Hub repo id"):
        convert_checkpoint("no/such/folder", tmp_path / "out")


def test_writer_keeps_no_reference_to_a_finished_input_shard(tmp_path):
    """What bounds peak memory: after `release_inputs()` nothing pending points into the last input shard
    (a small remainder is copied, half a shard or more is written)."""
    import weakref

    from flash_vstream_hf.conversion.writer import ShardedSafetensorsWriter

    writer = ShardedSafetensorsWriter(tmp_path, max_shard_size=1000)
    shard = torch.zeros(1000, dtype=torch.uint8)  # stands for a memory-mapped input shard
    alive = weakref.ref(shard)
    writer.add("small", shard[:100])
    writer.release_inputs()
    del shard
    assert alive() is None and not list(tmp_path.glob("*.partial"))
    shard = torch.ones(1000, dtype=torch.uint8)
    alive = weakref.ref(shard)
    writer.add("large", shard[:600])
    writer.release_inputs()
    del shard
    assert alive() is None and len(list(tmp_path.glob("*.partial"))) == 1
    assert writer.finish() == ["model.safetensors"] and (tmp_path / "model.safetensors").is_file()
