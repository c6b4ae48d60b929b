"""The pack: thin ComfyUI nodes (this folder) over the engine (engine/)."""
