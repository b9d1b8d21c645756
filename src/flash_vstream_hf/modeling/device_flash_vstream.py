"""Device and dtype look-ups that survive big-model loading: where a module computes and in which dtype, also
when accelerate offloads it or bitsandbytes stores its weights as integers.

Only torch is imported, so the modeling folder stays usable as Hub remote code.
"""

from __future__ import annotations

import torch
from torch import nn


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
