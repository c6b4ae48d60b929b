"""Typical on-demand GPU prices, so a run report can say what a video cost without any setting.

Never fetched at run time: prices change, and the operator's own figure
(``WAN_VOLUME_PRICE_PER_HOUR``, report.py) always wins over this table.

Source: RunPod Serverless "GPU pricing" table, flex workers (pay per second, scale to zero),
https://docs.runpod.io/serverless/pricing, read 2026-12-04 from a stored copy of the page. The
per-second prices there are multiplied by 3600. Flex is the on-demand price of the serverless
worker this pack is built for; Pods and other clouds are often cheaper or dearer (set the variable).
"""
from __future__ import annotations

import re

SOURCE = "RunPod Serverless flex price per GPU (docs.runpod.io/serverless/pricing, read 2026-12-04)"

# (pattern on torch.cuda.get_device_name(), USD per GPU-second). More specific names first:
# "L40S" before "L40" before "L4", "RTX 4000 Ada" is not a 4090, "A100" is not "H100".
_PER_SECOND: tuple[tuple[str, float], ...] = (
    (r"\bB200\b", 0.00240),
    (r"\bH200\b", 0.00155),
    (r"\bH100\b", 0.00116),
    (r"\bA100\b", 0.00076),
    (r"\bL40S?\b|6000 Ada", 0.00053),
    (r"\bA6000\b|\bA40\b", 0.00034),
    (r"\b4090\b", 0.00031),
    (r"\bL4\b|\bA5000\b|\b3090\b", 0.00019),
    (r"\bA4000\b|\bA4500\b|RTX 4000\b", 0.00016),
)
PER_HOUR: tuple[tuple[str, float], ...] = tuple((p, round(s * 3600, 4)) for p, s in _PER_SECOND)


def gpu_price_per_hour(gpu_name: str) -> float | None:
    """USD per hour of ONE GPU named ``gpu_name`` (as CUDA reports it), or None if not listed."""
    for pattern, price in PER_HOUR:
        if re.search(pattern, gpu_name):
            return price
    return None
