"""The run report's load phase split: hash, read and convert (thread-seconds), to-device, bytes read."""
from __future__ import annotations

from wan_engine import report, tiny_model
from wan_engine.load import assemble
from wan_engine.store import find


def test_a_load_records_its_split_and_the_report_shows_it(volume_env):
    assemble.release()
    found = find.get_model_set(tiny_model.TINY_SET_NAME)
    loaded = assemble.load(found, "bf16")
    split = loaded.load_split
    assemble.release()
    weights = sum(f.stat().st_size for f in found.files() if f.suffix == ".safetensors")
    assert set(split) == {"hash", "read", "convert", "to_device", "read_bytes", "seconds"}
    assert 0 < split["read_bytes"] <= weights, (split, weights)   # tensor bytes: headers excluded
    assert split["read"] > 0 and split["convert"] > 0, "the tiny set is fp32 on disk: bf16 converts"
    assert split["hash"] < split["seconds"] and split["to_device"] <= split["seconds"]
    record = report.RunRecord("p")
    with record.phase("load"):
        record.note_load(True, split)
    (load,) = record.finish()["phases"]
    assert load["name"] == "load" and load["split"] == split
    again = report.RunRecord("q")
    with again.phase("load"):
        again.note_load(False, split)              # reused: nothing was read, no split
    assert "split" not in again.finish()["phases"][0]

