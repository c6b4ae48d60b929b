"""The pack's ComfyUI extension: the node list."""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .loader import WanVolumeModelLoader
from .lora_node import WanVolumeLoraApply
from .sampler import WanVolumeSampler
from .speed_node import WanVolumeSpeedSettings
from .status_node import WanVolumeStatus
from .video import WanVolumeVideoCombine


class WanVolumeExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [WanVolumeModelLoader, WanVolumeLoraApply, WanVolumeSampler, WanVolumeVideoCombine,
                WanVolumeSpeedSettings, WanVolumeStatus]
