"""ComfyUI-WanVolume: Wan2.1 image-to-video from a network volume (ComfyUI V3 node API)."""
import importlib.util
import logging

WEB_DIRECTORY = "./web/js"

# Routes need ComfyUI's PromptServer; outside ComfyUI (e.g. pytest importing this package) skip them.
if importlib.util.find_spec("server") is not None and importlib.util.find_spec("folder_paths") is not None:
    try:
        from .nodes import routes as _routes
        _routes.setup()
    except Exception:   # the routes are an extra; the nodes must load without them
        logging.getLogger("wanvolume").exception("WanVolume: volume status route not available")
    try:   # POST /free {"free_memory": true} drops the resident Wan set's RAM copy too
        from .nodes import memory as _memory
        _memory.install()
    except Exception:
        logging.getLogger("wanvolume").exception("WanVolume: could not watch POST /free")
    try:   # POST /prompt: Wan2.2-only inputs on a Wan2.1 set (and the reverse) refused with their field
        from .nodes import family_check as _family_check
        _family_check.install()
    except Exception:
        logging.getLogger("wanvolume").exception("WanVolume: could not check prompts' model-set family")
    try:   # WAN_VOLUME_PREFETCH=default warms the page cache with the default set
        from .nodes.common import extra_set_dirs
        from .wan_engine.load import warmup as _warmup
        _warmup.start(extra_set_dirs())
    except Exception:
        logging.getLogger("wanvolume").exception("WanVolume: prefetch did not start")
    try:   # WAN_VOLUME_WARMUP=<set|default>[,loras] loads the set in the background
        from .nodes import warmup as _set_warmup
        _set_warmup.start()
    except Exception:
        logging.getLogger("wanvolume").exception("WanVolume: warm-up did not start")


async def comfy_entrypoint():
    from .nodes.extension import WanVolumeExtension

    return WanVolumeExtension()


__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
