"""Big-model loading support: default bitsandbytes skip modules and device/dtype look-ups that survive offload.

Only torch and transformers are imported, so the modeling folder stays usable as Hub remote code.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
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


def floating_dtype(module: nn.Module, default: torch.dtype) -> torch.dtype:
    """Dtype of the first floating-point parameter (quantized weights are stored as integers; offloaded ones
    keep their dtype on the meta device)."""
    for parameter in module.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return default


def execution_device(module: nn.Module) -> torch.device:
    """The device `module` computes on, also when accelerate offloads it.

    With `device_map` offload (CPU on a GPU machine, or disk), parameters sit on the meta device until an
    accelerate hook loads them for the forward pass; the hook's `execution_device` is where the inputs must go.
    Modules are searched in registration order, so a split module answers for its first part.
    """
    for submodule in module.modules():
        hook = getattr(submodule, "_hf_hook", None)
        for part in getattr(hook, "hooks", (hook,)):  # accelerate's SequentialHook holds several hooks
            device = getattr(part, "execution_device", None)
            if device is not None:
                return torch.device(device)
        for parameter in submodule.parameters(recurse=False):
            if parameter.device.type != "meta":
                return parameter.device
    return torch.device("cpu")
