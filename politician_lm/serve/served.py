"""The personas on the one shared model: loaded once at start, added and removed at run time.

The base loads through ``load_persona`` (the path ``generate`` and ``chat`` use: the base de-quantized once on CPU,
the first persona's adapters at their weights), and every persona becomes ONE adapter on that model: a persona of
one adapter is that adapter, scaled by its weight; a weighted mix is folded at load time by PEFT's exact ``cat``
combination (``model.adapters.fold_weighted``, as ``merge`` does: ranks stacked, the update the weighted sum of
the adapters' updates). A row of a batch then names its persona's adapter and nothing else touches it.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from politician_lm.artifacts.adapter import read_adapter, read_metadata, same_model
from politician_lm.artifacts.roles import user_turn
from politician_lm.data.templates import PromptStyle
from politician_lm.errors import UserError
from politician_lm.inference import Persona, load_persona
from politician_lm.model.adapters import adapter_names, attach_weighted, check_fit, fold_weighted
from politician_lm.model.loading import generation_defaults
from politician_lm.serve.personas import PersonaSpec
from politician_lm.serve.sampling import SETTINGS
from politician_lm.serve.scheduler import BASE, Prefix


@dataclass(eq=False)
class ServedPersona:
    """A persona on the shared model: ``persona`` for the model thread, ``front`` for tokenizing on the server
    thread (same model and style, its own tokenizer copy: a fast tokenizer is not shared across threads), and the
    one ``adapter`` its rows name (``__base__`` for the bare base)."""

    spec: PersonaSpec
    persona: Persona
    front: Persona
    adapter: str
    prefix: Prefix | None = None


@dataclass
class ServedSet:
    """Every persona served, by name, and what adding one needs: the model, its tokenizer, the base it was loaded
    from (and the bases its first adapters name, which a new adapter may name too), the registry to read by name."""

    model: Any
    tokenizer: Any
    base_model: str
    bases: set[str]
    registry: str | None = None
    allow_pickle: bool = False
    personas: dict[str, ServedPersona] = field(default_factory=dict)
    _numbers: Any = field(default_factory=lambda: itertools.count(1))

    def same_base(self, base: str) -> bool:
        return any(same_model(base, b) for b in self.bases)

    def add(self, spec: PersonaSpec) -> ServedPersona:
        """Attach ``spec``'s adapters as one adapter (model thread only: PEFT changes the model's modules)."""
        if spec.name in self.personas:
            raise UserError(f"persona {spec.name!r} is already loaded; unload it first")
        if not self.same_base(spec.base_model):
            raise UserError(
                f"persona {spec.name!r} is for base model {spec.base_model!r}, but this server holds "
                f"{self.base_model!r}; serve it from a server of that base"
            )
        if not spec.adapters:
            return self._served(spec, BASE, self.bare_style())
        check_fit(self.base_model, [read_adapter(p, self.allow_pickle) for p in spec.adapters], self.allow_pickle)
        number = next(self._numbers)
        names = adapter_names(len(spec.adapters), prefix=f"persona{number}")
        self.model = attach_weighted(self.model, spec.adapters, spec.weights, names)
        name = names[0]
        if len(names) > 1:
            name = f"persona{number}"
            fold_weighted(self.model, names, name)
        style = PromptStyle.from_metadata(read_metadata(spec.adapters[0]))
        return self._served(spec, name, style)

    def remove(self, served: ServedPersona) -> None:
        """Delete a removed persona's adapter from the model (model thread only, once no row uses it)."""
        if served.adapter != BASE:
            self.model.delete_adapter(served.adapter)

    def bare_style(self) -> PromptStyle:
        return PromptStyle.from_metadata(read_metadata(self.base_model))

    def _served(self, spec: PersonaSpec, adapter: str, style: PromptStyle) -> ServedPersona:
        generation = {**(generation_defaults(Path(spec.adapters[0])) if spec.adapters else {}), **spec.generation}
        if extra := sorted(set(generation) - {*SETTINGS, "max_new_tokens"}):
            raise UserError(
                f"persona {spec.name!r}: serve does not apply the generation settings {', '.join(extra)} "
                f"(it applies max_new_tokens, {', '.join(SETTINGS)})"
            )
        served = ServedPersona(
            spec=spec,
            persona=Persona(model=self.model, tokenizer=self.tokenizer, style=style, generation=generation),
            front=Persona(
                model=self.model, tokenizer=copy.deepcopy(self.tokenizer), style=style, generation=generation
            ),
            adapter=adapter,
        )
        served.prefix = prompt_head(served.persona)
        self.personas[spec.name] = served
        return served


def prompt_head(persona: Persona) -> Prefix:
    """The tokens every prompt of ``persona`` starts with (its system prompt and template, up to the user's words):
    what two one-letter questions have in common."""
    a, b = (persona.prompt_ids([user_turn(t, persona.style.prompt_format)]) for t in ("a", "b"))
    n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return Prefix(a[:n])


def load_served(
    specs: list[PersonaSpec], quantization: str | None = None, allow_pickle: bool = False, device: str | None = None
) -> ServedSet:
    """Load the base once and every persona in ``specs`` as one adapter each (see the module docstring)."""
    first = specs[0]
    p0 = load_persona(
        first.adapters, first.weights, first.base_model, quantization, device=device, allow_pickle=allow_pickle
    )
    bases = {first.base_model} | {read_adapter(p, allow_pickle).base_model for s in specs for p in s.adapters}
    served = ServedSet(p0.model, p0.tokenizer, first.base_model, bases, first.registry, allow_pickle)
    names = adapter_names(len(first.adapters))  # load_persona's names, already attached at their weights
    name = names[0]
    if len(names) > 1:
        name = "persona0"
        fold_weighted(served.model, names, name)
    served._served(first, name, p0.style)
    for spec in specs[1:]:
        served.add(spec)
    served.model.eval()
    return served
