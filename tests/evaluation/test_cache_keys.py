"""evaluation.cache_keys: the code both of evaluate's caches key on (the arms and the judge's generic class)."""

from __future__ import annotations

from politician_lm.data.templates import PromptStyle
from politician_lm.evaluation.arm_cache import arm_key
from politician_lm.evaluation.generic import generic_texts


class Recorder:  # what generic_texts needs of a Persona: its style and generate
    style = PromptStyle(prompt_format="chat")

    def __init__(self):
        self.calls = 0

    def generate(self, conversations, streamer=None, batch_size=None, on_batch=None, **settings):
        self.calls += 1
        for _ in range(0, len(conversations), batch_size):
            if on_batch is not None:
                on_batch(1)
        return [f"answer {self.calls}" for _ in conversations]


PROMPTS = [[{"role": "user", "content": "Jobs?"}]]
ARITHMETIC = ("POLITICIAN_LM_PACKED_LINEAR", "POLITICIAN_LM_FUSED_LORA")  # switches.py's that change rounding


def test_a_library_upgrade_or_a_source_change_recomputes_the_generic_texts_and_the_arms(tmp_path, monkeypatch):
    from politician_lm.evaluation import cache_keys

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    persona, base, inputs = Recorder(), str(tmp_path / "base"), {"prompts": ["a"]}
    first, key = generic_texts(persona, PROMPTS, 8, 4, base), arm_key(base, inputs)
    assert generic_texts(persona, PROMPTS, 8, 4, base) == first and arm_key(base, inputs) == key  # nothing changed
    versions = cache_keys._versions()
    monkeypatch.setattr(cache_keys, "_versions", lambda: {**versions, "transformers": "0.0.1"})
    assert generic_texts(persona, PROMPTS, 8, 4, base) == ["answer 2"] and arm_key(base, inputs) != key
    upgraded = arm_key(base, inputs)
    monkeypatch.setattr(cache_keys, "_source_digest", lambda: "a decoding fix")
    assert generic_texts(persona, PROMPTS, 8, 4, base) == ["answer 3"] and arm_key(base, inputs) != upgraded
    assert generic_texts(persona, PROMPTS, 8, 4, base) == ["answer 3"] and persona.calls == 3  # cached again


def test_an_arithmetic_switch_turned_off_recomputes_the_arms_and_the_generic_texts(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    for name in ARITHMETIC:
        monkeypatch.delenv(name, raising=False)
    persona, base, inputs = Recorder(), str(tmp_path / "base"), {"prompts": ["a"]}
    first, key = generic_texts(persona, PROMPTS, 8, 4, base), arm_key(base, inputs)
    seen = {key}
    for name in ARITHMETIC:
        monkeypatch.setenv(name, "1")  # on, as unset
        assert arm_key(base, inputs) == key and generic_texts(persona, PROMPTS, 8, 4, base) == first
        monkeypatch.setenv(name, "0")
        off = arm_key(base, inputs)
        assert off not in seen and generic_texts(persona, PROMPTS, 8, 4, base) != first
        monkeypatch.setenv(name, "off")  # another spelling of the same switch: the same key
        assert arm_key(base, inputs) == off
        seen.add(off)
        monkeypatch.delenv(name)
    assert arm_key(base, inputs) == key and generic_texts(persona, PROMPTS, 8, 4, base) == first


def test_generic_texts_from_the_cache_count_their_batches_as_done(tmp_path, monkeypatch):
    """evaluate's bar counts the generic class's batches: a cache hit must complete them too (it ended at 87/88)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    persona, prompts, base = Recorder(), PROMPTS * 5, str(tmp_path / "base")
    computed, cached = [], []
    first = generic_texts(persona, prompts, 8, 2, base, on_batch=computed.append)
    assert generic_texts(persona, prompts, 8, 2, base, on_batch=cached.append) == first and persona.calls == 1
    assert sum(computed) == sum(cached) == 3  # 5 prompts in batches of 2


def test_two_hub_models_do_not_share_their_generic_texts(tmp_path, monkeypatch):
    """A hub id has no folder to fingerprint: its name keys the texts (the 360M model got the 135M model's)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    persona = Recorder()
    small = generic_texts(persona, PROMPTS, 8, 4, "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert generic_texts(persona, PROMPTS, 8, 4, "HuggingFaceTB/SmolLM2-360M-Instruct") != small
    assert generic_texts(persona, PROMPTS, 8, 4, "HuggingFaceTB/SmolLM2-135M-Instruct") == small and persona.calls == 2
