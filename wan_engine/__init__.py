"""The engine: everything that does real work, with no ComfyUI import.

volume -> assemble (load a model set) -> lora -> sampling -> decode -> video.
"""
