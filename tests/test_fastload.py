"""fastload: dtype on the way in, no double copies, parallel shards, clear errors, prefetch."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from wan_engine.load import fastload

REPO = Path(__file__).resolve().parent.parent


def _bf16(_k, dt):
    return torch.bfloat16 if dt.is_floating_point else dt


def test_converts_on_the_way_in_with_small_chunks(tmp_path):
    sd = {"big": torch.randn(1000, 37), "half": torch.randn(7).half(), "scalar": torch.tensor(2.5),
          "fp8": torch.randn(9, 4).to(torch.float8_e4m3fn), "ids": torch.arange(5),
          "skip.me": torch.ones(3), "empty": torch.empty(0, 4)}
    save_file(sd, str(tmp_path / "a.safetensors"))
    out = fastload.load_file(tmp_path / "a.safetensors",
                             rename=lambda k: None if k.startswith("skip") else f"x.{k}",
                             dtype_for=_bf16, chunk=1000)   # tensors span many chunks
    assert set(out) == {f"x.{k}" for k in sd if not k.startswith("skip")}
    for k, v in sd.items():
        if not k.startswith("skip"):
            want = v.to(torch.bfloat16) if v.dtype.is_floating_point else v
            assert out[f"x.{k}"].dtype == want.dtype and torch.equal(out[f"x.{k}"], want), k


def test_many_small_converted_tensors_each_get_their_own_bytes_and_scale(tmp_path):
    """Conversions run behind the reads across tensors: tensor k converts while k+1 is read into
    the other staging buffer; every tensor must still get its own bytes and its own scale."""
    gen = torch.Generator().manual_seed(3)
    sd = {f"w{i}": (torch.randn(5 + i, 3, generator=gen) * 0.1).to(torch.float8_e4m3fn) for i in range(40)}
    sd.update({f"b{i}": torch.randn(4, generator=gen) for i in range(40)})   # read as they are, between
    save_file(sd, str(tmp_path / "m.safetensors"))
    scales = {f"w{i}": torch.tensor(0.5 + i / 16) for i in range(40)}
    for chunk in (64, 1 << 20):
        got = fastload.load_file(tmp_path / "m.safetensors", chunk=chunk, scales=scales,
                                 dtype_for=lambda k, d: torch.bfloat16 if k[0] == "w" else d)
        for key, value in sd.items():
            want = value.to(torch.bfloat16) * scales[key].to(torch.bfloat16) if key[0] == "w" else value
            assert torch.equal(got[key], want), (chunk, key)


def test_a_failing_conversion_is_raised_after_every_buffer_is_released(tmp_path, monkeypatch):
    sd = {f"w{i}": torch.randn(300) for i in range(6)}
    save_file(sd, str(tmp_path / "f.safetensors"))
    calls, running = [], []
    real = fastload.convert

    def convert(src, out, scale=None):
        running.append(1)
        calls.append(src.numel())
        try:
            if len(calls) == 3:
                raise RuntimeError("conversion broke")
            real(src, out, scale)
        finally:
            running.pop()

    monkeypatch.setattr(fastload, "convert", convert)
    with pytest.raises(RuntimeError, match="conversion broke"):
        fastload.load_file(tmp_path / "f.safetensors", dtype_for=_bf16, chunk=800)
    assert running == [] and len(calls) >= 3   # nothing still converting once the error is out


def test_parallel_shards_equal_sequential(tmp_path):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"s{i}.safetensors")
        save_file({f"t{i}.{j}": torch.randn(64, 64) for j in range(4)}, str(paths[-1]))
    seq = fastload.load_files(paths, workers=1)
    par = fastload.load_files(paths, workers=3)
    assert seq.keys() == par.keys() and all(torch.equal(seq[k], par[k]) for k in seq)


def test_truncated_file_names_the_fix(tmp_path):
    path = tmp_path / "t.safetensors"
    save_file({"w": torch.randn(1000)}, str(path))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(OSError, match="wanvolume.py verify"):
        fastload.load_file(path)


def test_prefetch_reads_everything(tmp_path):
    path = tmp_path / "p.bin"
    path.write_bytes(b"x" * 3_000_000)
    thread = fastload.prefetch([path], chunk=1 << 20)
    thread.join(timeout=30)
    assert not thread.is_alive()


PEAK_SCRIPT = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, sys.argv[2])
    from wan_engine.load import fastload
    from safetensors.torch import load_file
    def hwm():   # peak RSS (VmHWM) in bytes
        line = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]
        return int(line.split()[1]) * 1024
    open('/proc/self/clear_refs', 'w').write('5')   # reset the peak to the current RSS
    before = hwm()
    if sys.argv[3] == 'fast':
        sd = fastload.load_file(sys.argv[1], dtype_for=lambda k, d: torch.bfloat16, chunk=8 << 20)
    else:   # the naive way: read the file, then convert
        sd = {k: v.to(torch.bfloat16) for k, v in load_file(sys.argv[1]).items()}
    loaded = sum(t.numel() * t.element_size() for t in sd.values())
    print((hwm() - before) / loaded)
""")


def _peak_ratio(path: Path, how: str) -> float:
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(path), str(REPO), how],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def test_fp32_file_into_bf16_without_an_fp32_copy(tmp_path):
    path = tmp_path / "fp32.safetensors"
    gen = torch.Generator().manual_seed(0)
    save_file({f"w{i}": torch.randn(2048, 2048, generator=gen) for i in range(24)}, str(path))  # 400 MB
    fast = _peak_ratio(path, "fast")
    assert fast < 1.15, f"peak RSS {fast:.2f}x the loaded bf16 size"
    naive = _peak_ratio(path, "naive")
    assert naive > 1.5, f"the naive baseline should hold the fp32 copy too ({naive:.2f}x)"
