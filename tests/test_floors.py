"""The declared floors stay one list, and the version bridges pick what the installed libraries have.

scripts/floors.sh (CI job ``floors``) runs the engine tests on the lowest versions
requirements.txt allows; these tests keep pyproject.toml's list equal to it and check the two
places that differ between allowed versions (huggingface_hub 1.x/2.x, diffusers 0.37/0.4x).
"""
from __future__ import annotations

import re
import tomllib

import torch

from helpers import REPO
from wan_engine.load import compat
from wan_engine.store import hub


def _requirements() -> list[str]:
    lines = (REPO / "requirements.txt").read_text().splitlines()
    return [re.sub(r"\s*#.*", "", line).strip() for line in lines if re.sub(r"#.*", "", line).strip()]


def test_pyproject_declares_the_same_ranges_as_requirements_txt():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["dependencies"] == _requirements()


def test_http_module_is_the_one_huggingface_hubs_session_uses():
    from huggingface_hub.utils import get_session

    httpx = hub.http_module()
    assert isinstance(get_session(), httpx.Client)
    assert issubclass(httpx.ConnectError, httpx.TransportError)   # what fetch/hub catch


def test_dtype_keyword_per_library():
    from diffusers import AutoencoderKLWan
    from transformers import CLIPVisionModel

    assert compat.dtype_kwargs(AutoencoderKLWan, torch.bfloat16) == {"torch_dtype": torch.bfloat16}
    assert compat.dtype_kwargs(CLIPVisionModel, torch.float32) == {"dtype": torch.float32}


def test_execution_device_of_a_plain_module_is_its_own():
    layer = torch.nn.Linear(2, 2)
    assert compat.module_execution_device(layer) == torch.device("cpu")
