"""Keyword differences between the library versions requirements.txt allows, in one place."""
from __future__ import annotations

import torch


def dtype_kwargs(cls: type, dtype: torch.dtype) -> dict[str, torch.dtype]:
    """The dtype keyword ``cls.from_pretrained`` understands.

    diffusers models take ``torch_dtype`` in every allowed version (0.36 has no ``dtype=`` and
    hands it to the model's ``__init__``, which fails); transformers 5 models take ``dtype`` and
    load in the checkpoint's own dtype unless told.
    """
    from diffusers import ModelMixin

    if issubclass(cls, ModelMixin):
        return {"torch_dtype": dtype}
    return {"dtype": dtype}


def module_execution_device(module: torch.nn.Module) -> torch.device:
    """The device ``module``'s inputs must be on: under offload hooks not where its weights sit.

    diffusers >= 0.41 has this as ``get_module_execution_device``; for 0.37-0.40 the same three
    places are asked here: a group-offload onload device, an accelerate hook's execution device,
    then the module's own device.
    """
    try:
        from diffusers.utils.torch_utils import get_module_execution_device
    except ImportError:
        pass
    else:
        return get_module_execution_device(module)
    from diffusers.hooks.group_offloading import _get_group_onload_device

    try:
        return _get_group_onload_device(module)
    except ValueError:        # no group offloading on this module
        pass
    for sub in module.modules():
        hooked = getattr(getattr(sub, "_hf_hook", None), "execution_device", None)
        if hooked is not None:
            return torch.device(hooked)
    own = getattr(module, "device", None)
    if own is None:
        own = next(iter([*module.parameters(), *module.buffers()])).device
    return torch.device(own)
