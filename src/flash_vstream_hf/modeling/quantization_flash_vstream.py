"""Quantized loading: the default bitsandbytes skip modules (device and dtype look-ups are in device_flash_vstream).

Only torch and transformers are imported, so the modeling folder stays usable as Hub remote code.
"""

from __future__ import annotations

import copy

from transformers import BitsAndBytesConfig
from transformers.utils import logging

logger = logging.get_logger(__name__)


def with_default_skip_modules(quantization_config, skip_modules: tuple[str, ...]):
    """The `quantization_config` to load with, its bitsandbytes skip list defaulting to `skip_modules`.

    transformers only keeps `lm_head` (and tied weights) out of bitsandbytes by default, and there is no model
    attribute that adds to that list without also forcing fp32 (`_keep_in_fp32_modules`). So the model fills
    `llm_int8_skip_modules` itself when the user left it unset. A list the user gives is used as it is and
    replaces the defaults, as transformers does for every model; other configs and `None` pass through.

    Args:
        quantization_config: what was passed to `from_pretrained` (`BitsAndBytesConfig`, a dict of one, or any
            other quantization config).
        skip_modules: full module names (from the model's root) to keep in the compute dtype.
    Returns:
        A copy of a bitsandbytes config with `llm_int8_skip_modules` set, or `quantization_config` unchanged.
    """
    if isinstance(quantization_config, dict) and quantization_config.get("quant_method") == "bitsandbytes":
        quantization_config = BitsAndBytesConfig.from_dict(quantization_config)
    if not isinstance(quantization_config, BitsAndBytesConfig):
        return quantization_config
    if quantization_config.llm_int8_skip_modules is not None:
        missing = [name for name in skip_modules if name not in quantization_config.llm_int8_skip_modules]
        if missing:
            logger.info(
                f"llm_int8_skip_modules={quantization_config.llm_int8_skip_modules} replaces the default "
                f"skip list; {missing} will be quantized unless a pattern above matches them"
            )
        return quantization_config
    quantization_config = copy.deepcopy(quantization_config)
    quantization_config.llm_int8_skip_modules = list(skip_modules)
    return quantization_config
