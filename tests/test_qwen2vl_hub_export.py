"""`flash-vstream export-hub` for a Flash-VStream v2 folder: the exported folder loads with `trust_remote_code=True`
in an interpreter where flash_vstream_hf cannot be imported, and answers as the package's model does."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from flash_vstream_hf import FlashVStreamQwen2VLForConditionalGeneration, FlashVStreamQwen2VLProcessor
from flash_vstream_hf.conversion import export_hub
from flash_vstream_hf.conversion.export_hub import QWEN2VL_AUTO_MAP, remote_code_files

from .test_hub_export import assert_remote_code_refuses_unsupported_transformers, card_metadata, run_without_the_package
from .test_qwen2vl_model import tiny_config
from .test_qwen2vl_processing import FLASH_MEMORY, tokenizer

REPO_ID = "someone/flash-vstream-qwen-tiny"
PROMPT = "<|vision_start|><|video_pad|><|vision_end|> what is moving here ?"

REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["flash_vstream_hf"] = None
    import json
    import numpy as np
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

    folder, frames_path, prompt = sys.argv[1:4]
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    base = AutoModel.from_pretrained(folder, trust_remote_code=True)
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    inputs = processor(text=prompt, videos=np.load(frames_path), return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1]
    tokens = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    print(json.dumps({
        "classes": [type(x).__module__ + "." + type(x).__name__ for x in (config, base, model, processor)],
        "input_ids": inputs["input_ids"][0].tolist(),
        "logits": logits.tolist(),
        "tokens": tokens[0].tolist(),
    }))
    """
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_qwen2vl")
    ids = {"video_token_id": 1, "image_token_id": 2, "vision_start_token_id": 3, "vision_end_token_id": 4}
    config = tiny_config(**ids)
    config.vision_config.flash_memory_config = {**config.vision_config.flash_memory_config, **FLASH_MEMORY}
    torch.manual_seed(0)
    model = FlashVStreamQwen2VLForConditionalGeneration(config).eval()
    processor = FlashVStreamQwen2VLProcessor(
        Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112),
        tokenizer(),
        flash_memory_config=FLASH_MEMORY,
    )
    model.save_pretrained(root / "repo")
    processor.save_pretrained(root / "repo")
    written = export_hub(root / "repo", repo_id=REPO_ID)
    return root, written, model, processor


def test_the_folder_gets_the_v2_remote_code_auto_map_card_and_handler_and_no_v1_model_code(exported):
    root, written, _, _ = exported
    folder = root / "repo"
    names = {p.name for p in remote_code_files("flash_vstream_qwen2_vl")}
    assert "modeling_flash_vstream_qwen2vl.py" in names and "flash_memory.py" in names
    assert names <= set(written) and all((folder / name).is_file() for name in names)
    assert not (folder / "modeling_flash_vstream.py").exists() and not (folder / "processing_flash_vstream.py").exists()
    # the endpoint handler and what it and the release check need of v1's packages, and nothing else of them
    assert {"handler.py", "requirements.txt", "video_io.py", "demuxers.py", "transformers_compat.py"} <= set(written)
    assert json.loads((folder / "config.json").read_text())["auto_map"] == QWEN2VL_AUTO_MAP
    processor_map = json.loads((folder / "processor_config.json").read_text())["auto_map"]
    assert processor_map == {"AutoProcessor": QWEN2VL_AUTO_MAP["AutoProcessor"]}
    card = (folder / "README.md").read_text()
    assert REPO_ID in card and "{{" not in card and "Flash-VStream v2" in card
    metadata = card_metadata(folder)
    assert metadata.library_name == "transformers" and "custom_code" in metadata.tags


def test_the_exported_folder_loads_and_answers_without_the_package(exported):
    root, _, model, processor = exported
    frames = np.random.default_rng(0).integers(0, 256, (6, 56, 56, 3), dtype=np.uint8)  # 3 temporal patches
    np.save(root / "frames.npy", frames)
    result = run_without_the_package(REMOTE_SCRIPT, [root / "repo", root / "frames.npy", PROMPT], root)
    assert result.returncode == 0, result.stderr[-3000:]
    remote = json.loads(result.stdout.strip().splitlines()[-1])
    # the classes came from the folder's own copy of the code, not from flash_vstream_hf
    assert all(name.startswith("transformers_modules.") for name in remote["classes"]), remote["classes"]
    inputs = processor(text=PROMPT, videos=frames, return_tensors="pt")
    assert remote["input_ids"] == inputs["input_ids"][0].tolist()
    with torch.no_grad():
        expected = model(**inputs).logits[0, -1]
    torch.testing.assert_close(torch.tensor(remote["logits"]), expected, rtol=1e-5, atol=1e-5)
    tokens = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert remote["tokens"] == tokens[0].tolist()


def test_the_remote_code_refuses_an_unsupported_transformers_unless_overridden(exported):
    assert_remote_code_refuses_unsupported_transformers(exported[0], "FlashVStreamQwen2VLConfig")
