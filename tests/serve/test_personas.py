"""serve.personas.resolve_specs: which personas a server holds, every check made before any weights load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from politician_lm.errors import UserError
from politician_lm.serve.personas import resolve_specs
from tests.helpers import ROOT

SMOLLM2 = str(ROOT / "checkpoints" / "SmolLM2-135M-Instruct")
GREEDY = {"max_new_tokens": 24, "do_sample": False}


def write_registry(path: Path, entries: dict) -> str:
    path.write_text(yaml.safe_dump(entries))
    return str(path)


def entry(base: str, *adapters: tuple[Path | str, float], generation: dict | None = None) -> dict:
    return {
        "base_model": base,
        "adapters": [{"path": str(p), "weight": w} for p, w in adapters],
        "generation": generation or {},
    }


def one_line_error(**kw) -> str:
    kw = {"personas": None, "registry": "configs/models.yaml", "adapters": None, "base_model": None, **kw}
    with pytest.raises(UserError) as exc:
        resolve_specs(allow_pickle=False, **kw)
    message = str(exc.value)
    assert "\n" not in message, message
    return message


# -- errors that need no adapter on disk ------------------------------------------------------------------------------
def test_an_unknown_adapter_folder_is_named(tmp_path):
    missing = tmp_path / "missing"
    message = one_line_error(adapters=f"x={missing}")
    assert str(missing) in message and "adapter folder does not exist" in message


@pytest.mark.parametrize("name", ["bad name", "-dash-first", "x" * 65, "a/b"])
def test_a_persona_name_must_be_a_model_id(tmp_path, name):
    message = one_line_error(adapters=f"{name}={tmp_path}")
    assert repr(name) in message and "persona name" in message


def test_a_registry_without_trained_adapters_says_how_to_get_one(tmp_path, tiny_path):
    registry = write_registry(tmp_path / "r.yaml", {"alpha": entry(tiny_path, (tmp_path / "nope", 1.0))})
    message = one_line_error(registry=registry)
    assert "no persona has its adapter folders" in message and "--adapters NAME=PATH" in message


def test_an_unknown_registry_persona_lists_the_known_ones(tmp_path, tiny_path):
    registry = write_registry(tmp_path / "r.yaml", {"alpha": entry(tiny_path, (tmp_path / "a", 1.0))})
    message = one_line_error(registry=registry, personas="nixon")
    assert "no persona 'nixon'" in message and "alpha" in message


def test_a_registry_persona_without_adapters_is_refused(tmp_path, tiny_path):
    registry = write_registry(tmp_path / "r.yaml", {"alpha": {"base_model": tiny_path, "adapters": []}})
    message = one_line_error(registry=registry, personas="alpha")
    assert "'alpha'" in message and "adapters" in message


# -- on real adapter folders ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_registry_personas_keep_their_adapters_weights_base_and_settings(voices, tiny_path, tmp_path):
    a, b = voices
    registry = write_registry(
        tmp_path / "r.yaml",
        {
            "alpha": entry(tiny_path, (a, 1.0), generation=GREEDY),
            "mix": entry(tiny_path, (a, 0.7), (b, 0.6)),
            "untrained": entry(tiny_path, (tmp_path / "not-yet", 1.0)),
        },
    )
    specs = resolve_specs(None, registry, None, None, False)
    assert [s.name for s in specs] == ["alpha", "mix"]  # by default only the personas whose folders exist
    alpha, mix = specs
    assert [Path(p) for p in alpha.adapters] == [a] and alpha.weights == [1.0] and alpha.generation == GREEDY
    assert [Path(p) for p in mix.adapters] == [a, b] and mix.weights == [0.7, 0.6] and mix.generation == {}
    assert alpha.base_model == mix.base_model == tiny_path
    assert [s.name for s in resolve_specs("mix", registry, None, None, False)] == ["mix"]
    message = one_line_error(registry=registry, personas="alpha,untrained")  # named explicitly: its folder must exist
    assert "not-yet" in message and "does not exist" in message


@pytest.mark.slow
def test_adapters_given_as_name_and_path_or_path_alone(voices, tiny_path):
    a, b = voices
    named = resolve_specs(None, "unused.yaml", f"first={a},second={b}", None, False)
    assert [(s.name, s.adapters, s.weights) for s in named] == [("first", [str(a)], [1.0]), ("second", [str(b)], [1.0])]
    politician = json.loads((a / "politician_lm.json").read_text()).get("politician")
    (alone,) = resolve_specs(None, "unused.yaml", str(a), None, False)
    assert alone.name == (politician or a.resolve().name)
    assert alone.base_model == tiny_path  # the adapter's own base
    message = one_line_error(adapters=f"same={a},same={b}")
    assert "same name" in message


@pytest.mark.slow
def test_personas_of_two_bases_are_refused_with_a_choice(voices, tiny_path, tmp_path):
    a, b = voices
    registry = write_registry(
        tmp_path / "r.yaml", {"alpha": entry(tiny_path, (a, 1.0)), "beta": entry(SMOLLM2, (b, 1.0))}
    )
    message = one_line_error(registry=registry, personas="alpha,beta")
    assert "2 base models" in message and "--personas alpha" in message


@pytest.mark.slow
def test_one_persona_of_adapters_from_two_bases_is_refused(voices, tiny_path, tmp_path):
    a, b = voices
    other = shutil.copytree(b, tmp_path / "other-base")
    config = json.loads((other / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "someone/another-model"
    (other / "adapter_config.json").write_text(json.dumps(config))
    registry = write_registry(tmp_path / "r.yaml", {"mix": entry(tiny_path, (a, 0.5), (other, 0.5))})
    message = one_line_error(registry=registry, personas="mix")
    assert "'mix'" in message and str(other) in message and "one base" in message


@pytest.mark.slow
def test_an_adapter_that_does_not_fit_the_base_is_refused_before_loading(voices, tmp_path):
    a, _ = voices
    registry = write_registry(tmp_path / "r.yaml", {"alpha": entry(SMOLLM2, (a, 1.0))})
    if not Path(SMOLLM2, "config.json").is_file():
        pytest.skip("needs checkpoints/SmolLM2-135M-Instruct")
    message = one_line_error(registry=registry, personas="alpha")
    assert str(a) in message
