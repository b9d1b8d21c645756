"""Quantized loading of Flash-VStream v2: bitsandbytes quantizes the language model only, unless told otherwise.

transformers' default skip list keeps only `lm_head` (and tied weights) out of bitsandbytes, so Qwen2-VL's vision
tower and patch merger would be quantized too, and the Flash Memory would cluster 4-bit features. The model fills
`llm_int8_skip_modules` itself when the caller left it unset; a list the caller gives replaces the defaults, as
transformers does for every model. Only transformers is imported, so the folder stays usable as Hub remote code.
"""

from __future__ import annotations

import copy

from transformers import BitsAndBytesConfig


def with_default_skip_modules(quantization_config, skip_modules: tuple[str, ...]):
    """A copy of a bitsandbytes `quantization_config` (object or dict) whose unset `llm_int8_skip_modules` is
    `skip_modules` (full module names from the model's root, matched from the start); anything else unchanged."""
    if isinstance(quantization_config, dict) and quantization_config.get("quant_method") == "bitsandbytes":
        quantization_config = BitsAndBytesConfig.from_dict(quantization_config)
    if not isinstance(quantization_config, BitsAndBytesConfig) or quantization_config.llm_int8_skip_modules is not None:
        return quantization_config
    quantization_config = copy.deepcopy(quantization_config)
    quantization_config.llm_int8_skip_modules = list(skip_modules)
    return quantization_config
