"""The supported transformers range and the names that differ between its releases (modeling/transformers_compat)."""

import copy
import importlib.metadata
import importlib.util
import logging
import os
import warnings
from pathlib import Path

import pytest
import torch
import transformers
from packaging.requirements import Requirement
from packaging.version import Version
from transformers import DynamicCache

from flash_vstream_hf.modeling import transformers_compat as compat

from .helpers import prompt_inputs

ROOT = Path(__file__).resolve().parents[1]


def test_installed_release_is_inside_the_range_the_package_declares():
    declared = next(
        Requirement(r) for r in importlib.metadata.requires("flash-vstream-hf") if r.startswith("transformers")
    )
    assert declared.specifier == Requirement(compat.SUPPORTED_TRANSFORMERS).specifier
    if os.environ.get(compat.ALLOW_ANY_VERSION_ENV) != "1":  # scripts/check_transformers.py tries other releases
        assert Version(transformers.__version__) in declared.specifier


@pytest.mark.parametrize("version", ["5.22.2", "5.26.0", "6.0.0"])
def test_a_release_outside_the_range_is_refused_naming_the_range(version, monkeypatch):
    monkeypatch.delenv(compat.ALLOW_ANY_VERSION_ENV, raising=False)
    with pytest.raises(ImportError, match=f"supports {compat.SUPPORTED_TRANSFORMERS}.*{version} is installed"):
        compat.check_transformers_version(version)
    monkeypatch.setenv(compat.ALLOW_ANY_VERSION_ENV, "1")
    compat.check_transformers_version(version)  # the override lets the release check script try it


@pytest.mark.parametrize("version", [compat.MINIMUM_TRANSFORMERS, "5.24.0", "5.25.0"])
def test_releases_inside_the_range_are_accepted(version, monkeypatch):
    monkeypatch.delenv(compat.ALLOW_ANY_VERSION_ENV, raising=False)
    compat.check_transformers_version(version)


def test_cache_name_follows_the_release():
    expected = "cache" if Version(transformers.__version__) >= Version("5.24") else "past_key_values"
    assert compat.CACHE_NAME == expected
    assert compat.CACHE_NAME in transformers.modeling_outputs.CausalLMOutputWithPast.__dataclass_fields__


@pytest.mark.legacy_api
def test_resolve_cache_accepts_either_name_once():
    cache = DynamicCache()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        assert compat.resolve_cache(None, cache) is cache
    assert compat.resolve_cache(cache, None) is cache
    with pytest.raises(ValueError, match="both `cache` and `past_key_values`"):
        compat.resolve_cache(cache, DynamicCache())


def test_forward_returns_the_text_cache_under_the_release_name(tiny):
    model, processor = tiny
    ids = prompt_inputs(processor, 0, "what is on screen?")["input_ids"]
    out = model(input_ids=ids, use_cache=True)
    cache = compat.output_cache(out)
    assert isinstance(cache, DynamicCache) and cache.get_seq_length() == ids.shape[1]
    # continuing from that cache gives the logits of the full sequence, whichever name the cache is passed by
    step = torch.tensor([[5]])
    full = model(input_ids=torch.cat([ids, step], 1)).logits[:, -1]
    for name in ("cache", "past_key_values"):
        cache = compat.output_cache(model(input_ids=ids, use_cache=True))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            logits = model(input_ids=step, **{name: cache}, use_cache=True).logits[:, -1]
        # the old name warns as transformers' own models do from 5.24 on; nothing else warns ("both names given")
        expected = ["`past_key_values` is deprecated"] if name == "past_key_values" and compat.CACHE_RENAMED else []
        assert [str(w.message)[:31] for w in caught if issubclass(w.category, FutureWarning)] == expected
        torch.testing.assert_close(logits, full, rtol=1e-4, atol=1e-5)


def test_generate_reports_no_deprecation(tiny, frames, caplog):
    """The autouse fixture fails on deprecations transformers logs; this also checks its warnings."""
    model, processor = tiny
    memory = model.update_memory(frames(3))
    ids = prompt_inputs(processor, memory.get_seq_length(), "what happened?")["input_ids"]
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING, logger="transformers"):
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        model.generate(input_ids=ids, video_memory=memory, max_new_tokens=3, do_sample=False)
        config = copy.deepcopy(model.generation_config)
        config.max_new_tokens = 3
        model.generate(input_ids=ids, video_memory=memory, generation_config=config)
    assert config.suppress_tokens == model.generation_config.suppress_tokens  # the caller's config is not changed
    assert not [r for r in caplog.records if "deprecat" in r.getMessage().lower()]


def _release_check_script():
    spec = importlib.util.spec_from_file_location("check_transformers", ROOT / "scripts" / "check_transformers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_release_check_script_reads_the_range_from_the_compat_module():
    script = _release_check_script()
    assert script.supported_bounds() == (compat.MINIMUM_TRANSFORMERS, compat.NEXT_UNTESTED_TRANSFORMERS)
    assert script.requirement("floor") == f"transformers=={compat.MINIMUM_TRANSFORMERS}"
    assert Requirement(script.requirement("newest")).specifier == Requirement(compat.SUPPORTED_TRANSFORMERS).specifier
    assert script.requirement("5.25.0") == "transformers==5.25.0"
    with pytest.raises(SystemExit, match="not a release number"):
        script.requirement("5.25; rm -rf /")
