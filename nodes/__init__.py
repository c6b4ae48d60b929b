"""The pack: thin ComfyUI nodes (this folder) over the engine (wan_engine/)."""
