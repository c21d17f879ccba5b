"""evaluation.arm_cache: what its key sees, and an exact round trip."""

from __future__ import annotations

import os

import pytest

from politician_lm.evaluation.arm_cache import arm_key, load_arm, store_arm


def test_the_key_changes_with_the_inputs_and_with_weights_rewritten_in_place(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text('{"hidden_size": 8}')
    weights = base / "model.safetensors"
    weights.write_bytes(b"\0" * 64)
    key = arm_key(str(base), {"prompts": ["a"], "batch_sizes": [64, 8]})
    assert key == arm_key(str(base), {"batch_sizes": [64, 8], "prompts": ["a"]})  # order of keys does not matter
    assert key != arm_key(str(base), {"prompts": ["b"], "batch_sizes": [64, 8]})
    assert key != arm_key(str(tmp_path / "elsewhere"), {"prompts": ["a"], "batch_sizes": [64, 8]})
    weights.write_bytes(b"\1" * 64)  # same size, new weights: an export into the same folder
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert key != arm_key(str(base), {"prompts": ["a"], "batch_sizes": [64, 8]})


def test_answers_and_losses_round_trip_exactly(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    losses = [(0.1 + 0.2, 3), (1e-17, 1)]
    assert load_arm("k") is None
    store_arm("k", ["an answer"], losses, [(2.5, 4)])
    assert load_arm("k") == {"texts": ["an answer"], "losses": losses, "stance_losses": [(2.5, 4)]}
    (tmp_path / "politician_lm" / "arms" / "k.json").write_text("{not json")
    assert load_arm("k") is None  # a damaged file is recomputed, not trusted


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json"])
def test_pickle_weights_and_shard_indexes_rewritten_in_place_change_the_key(tmp_path, name):
    """A base with ``pytorch_model.bin`` (loaded with --allow_pickle) is another base once rewritten, as safetensors."""
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text('{"hidden_size": 8}')
    weights = base / name
    weights.write_bytes(b"\0" * 64)
    key = arm_key(str(base), {"prompts": ["a"]})
    assert arm_key(str(base), {"prompts": ["a"]}) == key  # nothing changed: the same key
    weights.write_bytes(b"\1" * 64)  # same size, new weights: an export into the same folder
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert arm_key(str(base), {"prompts": ["a"]}) != key
