"""Every name that differs between the supported transformers releases, in one place.

The rest of the code calls what is here instead of testing `transformers.__version__` itself, so supporting a new
release means reading this file and its tests. Each entry says which release changed what.

The config module calls `check_transformers_version()` at import, so the Hub remote-code bundle checks the
release it runs under before anything else can fail with a confusing error: transformers gives remote code no
compatibility guarantee across releases.
"""

from __future__ import annotations

import os
import warnings

import transformers
from packaging.version import Version

# The releases this code is tested on: the floor and the newest tested minor release. The package metadata
# (pyproject.toml) and the Hub bundle's requirements.txt pin the same range; `scripts/check_transformers.py`
# tests another release before the bound is raised.
MINIMUM_TRANSFORMERS = "5.23.0"
NEXT_UNTESTED_TRANSFORMERS = "5.26.0"
SUPPORTED_TRANSFORMERS = f"transformers>={MINIMUM_TRANSFORMERS},<{NEXT_UNTESTED_TRANSFORMERS}"
# Set to 1 to run on a release outside the range anyway (what the release check script does).
ALLOW_ANY_VERSION_ENV = "FLASH_VSTREAM_ALLOW_ANY_TRANSFORMERS"

TRANSFORMERS_VERSION = Version(transformers.__version__)

# 5.24 renamed the text KV cache `past_key_values` -> `cache`: the argument of every forward, mask builder and
# `generate()`, the field of every output class, the key `prepare_inputs_for_generation` emits and the one
# `_update_model_kwargs_for_generation` reads. 5.24 still accepts the old name with a deprecation warning (until 5.40).
CACHE_RENAMED = TRANSFORMERS_VERSION >= Version("5.24.0.dev0")
CACHE_NAME = "cache" if CACHE_RENAMED else "past_key_values"


def check_transformers_version(version: str | None = None) -> None:
    """Raise an `ImportError` naming the supported range when `version` (default: the installed transformers)
    is outside it, unless `FLASH_VSTREAM_ALLOW_ANY_TRANSFORMERS=1`."""
    installed = Version(version or transformers.__version__)
    if os.environ.get(ALLOW_ANY_VERSION_ENV) == "1":
        return
    if not Version(MINIMUM_TRANSFORMERS) <= installed < Version(NEXT_UNTESTED_TRANSFORMERS):
        raise ImportError(
            f"Flash-VStream supports {SUPPORTED_TRANSFORMERS}, but transformers {installed} is installed: "
            f'pip install "{SUPPORTED_TRANSFORMERS}" (or set {ALLOW_ANY_VERSION_ENV}=1 to try this release anyway)'
        )


def resolve_cache(cache, past_key_values):
    """The text KV cache a forward was given as `cache=` or by its pre-5.24 name `past_key_values=` (what
    `generate()` of 5.23 passes; from 5.24 on the old name warns, as transformers' own models do)."""
    if cache is not None and past_key_values is not None:
        raise ValueError("pass the text KV cache once: got both `cache` and `past_key_values`")
    if past_key_values is not None and CACHE_RENAMED:
        warnings.warn(
            "`past_key_values` is deprecated and will be removed in transformers 5.40.0 for "
            "FlashVStream forward. Use `cache` instead.",
            FutureWarning,
            stacklevel=3,
        )
    return cache if cache is not None else past_key_values


def cache_kwargs(cache) -> dict:
    """`{name: cache}` under the name this transformers release uses, for calls into transformers."""
    return {CACHE_NAME: cache}


def output_cache(output):
    """The text KV cache of a transformers output, read without a deprecation warning on any release."""
    return getattr(output, CACHE_NAME)
