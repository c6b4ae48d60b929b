"""ComfyUI-Manager runs this after cloning: install the pack's requirements into the running
interpreter (ComfyUI's), leaving torch as ComfyUI installed it."""
import subprocess
import sys
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parent / "requirements.txt"


def main() -> int:
    cmd = [sys.executable, "-m", "pip", "install", "-r", str(REQUIREMENTS)]
    print("[ComfyUI-WanVolume]", " ".join(cmd), flush=True)
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
