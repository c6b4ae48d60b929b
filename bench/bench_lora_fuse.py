"""What exact fusing costs and what it saves: backup RAM, fuse time, and the drift it removes.

    .venv/bin/python bench/bench_lora_fuse.py [--dim 1024 --layers 8 --rank 64 --changes 20] [--cost-only]

1. Backup RAM for the real Wan2.1 I2V 14B DiT (its config on the ``meta`` device, nothing
   allocated): fusing a distill LoRA backs up every Linear weight it adapts (q/k/v/o of both
   attentions, k_img/v_img, ffn.0/ffn.2 in 40 blocks) in the storage dtype, on the CPU, while
   fused. Printed in GiB and as a ratio to the whole DiT in bf16.
2. On a random bf16 DiT of ``--dim``/``--layers`` with a rank ``--rank`` LoRA: ``--changes``
   strength changes in fuse mode, then strength 0, once through peft's ``fuse_lora`` /
   ``unfuse_lora`` (the baseline: unmerge subtracts in bf16) and once through the engine
   (backup + restore). Prints the largest and the mean distance of the final weights from the
   base weights, the number of weights not bit-equal, and the time per fuse as a ratio to peft's.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import torch  # noqa: E402

LOW_RANK = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k",
            "attn2.to_v", "attn2.to_out.0", "attn2.add_k_proj", "attn2.add_v_proj", "ffn.net.0.proj",
            "ffn.net.2")


def backup_cost() -> None:
    from diffusers import WanTransformer3DModel

    config = json.loads((REPO / "wan_engine/load/configs/transformer_i2v_14b.json").read_text())
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    with torch.device("meta"):
        dit = WanTransformer3DModel(**config)
    total = sum(p.numel() for p in dit.parameters())
    fused = sum(m.weight.numel() for n, m in dit.named_modules()
                if n.startswith("blocks.") and n.count(".") >= 2 and n.split(".", 2)[2] in LOW_RANK)
    print(f"14B DiT: {total / 1e9:.3f} B parameters; a distill LoRA's fused Linear weights: "
          f"{fused / 1e9:.3f} B = {fused / total:.3f} of the DiT")
    print(f"  fuse backup in RAM while fused: {2 * fused / 2**30:.1f} GiB in bf16 or fp16 "
          f"(2 bytes a weight; fp8 storage never fuses)")


def _loaded(dim: int, layers: int):
    from diffusers import WanImageToVideoPipeline, WanTransformer3DModel

    from wan_engine.load.assemble import LoadedPipeline
    from wan_engine.store.find import ModelSet
    from wan_engine.tiny_model import TRANSFORMER_CONFIG, build_components

    comps = build_components(seed=0)
    cfg = dict(TRANSFORMER_CONFIG, num_attention_heads=dim // 128, num_layers=layers, ffn_dim=dim * 2,
               added_kv_proj_dim=dim)
    torch.manual_seed(0)
    comps["transformer"] = WanTransformer3DModel(**cfg).to(torch.bfloat16)
    pipe = WanImageToVideoPipeline(**comps)
    return LoadedPipeline(key=("bench",), model_set=ModelSet(name="b", layout="diffusers", root=Path(".")),
                          pipe=pipe, dtype=torch.bfloat16, device=torch.device("cpu"), offload="none",
                          load_seconds=0.0)


def _weights(transformer) -> dict[str, torch.Tensor]:
    return {n.replace(".base_layer", ""): p.detach().clone() for n, p in transformer.named_parameters()
            if "lora_" not in n}


def drift(dim: int, layers: int, rank: int, changes: int) -> None:
    from safetensors.torch import save_file

    from lora_builders import distill_lora
    from wan_engine.lora import apply as lora

    loaded = _loaded(dim, layers)
    sd = {k: v for k, v in distill_lora(loaded.pipe.transformer, "kijai", rank=rank).items()
          if ".lora_" in k}                                # the peft part: what peft's unmerge touches
    path = Path(tempfile.mkdtemp()) / "bench_lora.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    strengths = [0.3 + 0.05 * (i % 7) for i in range(changes)]
    results = {}
    for name in ("peft fuse_lora/unfuse_lora", "engine (backup + restore)"):
        run = _loaded(dim, layers)                          # same seed: the same weights
        base = _weights(run.pipe.transformer)
        start = time.perf_counter()
        if name.startswith("peft"):
            run.pipe.load_lora_weights(str(path), adapter_name="a")
            for s in strengths:
                run.pipe.unfuse_lora()
                run.pipe.set_adapters(["a"], [s])
                run.pipe.fuse_lora(components=["transformer"], adapter_names=["a"])
            run.pipe.unfuse_lora()
        else:
            for s in strengths:
                lora.activate(run, (lora.LoraUse(str(path), s),), fuse=True)
            lora.activate(run, (lora.LoraUse(str(path), 0.0),), fuse=True)
        seconds = (time.perf_counter() - start) / changes
        after = _weights(run.pipe.transformer)
        diffs = [(after[n].float() - v.float()).abs() for n, v in base.items()]
        results[name] = seconds
        print(f"{name}: after {changes} fused strength changes and strength 0: max |W - W0| "
              f"{max(d.max().item() for d in diffs):.3g}, mean {sum(d.sum().item() for d in diffs) / sum(d.numel() for d in diffs):.3g}, "
              f"{sum(not torch.equal(after[n], v) for n, v in base.items())} of {len(base)} weights not bit-equal; "
              f"{seconds * 1000:.0f} ms per change")
    base_s = results["peft fuse_lora/unfuse_lora"]
    print(f"time per fused strength change, engine / peft: {results['engine (backup + restore)'] / base_s:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--changes", type=int, default=20)
    ap.add_argument("--cost-only", action="store_true", help="only part 1 (the 14B backup size)")
    args = ap.parse_args()
    backup_cost()
    if not args.cost_only:
        drift(args.dim, args.layers, args.rank, args.changes)


if __name__ == "__main__":
    main()
