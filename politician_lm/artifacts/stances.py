"""Stance probes: a politician's documented policy positions, read from the ``stances:`` list of a profile.

Each entry names a policy (``statement``, asked as "Do you support {statement}?"), the politician's ``position``
(support or oppose) and a short first-person ``argument`` for it. Ids shared between profiles carry the same
statement, so one probe can be put to every politician; ``is_heldout_stance`` hashes the id alone, so a held-out
probe is held out for all of them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from politician_lm.errors import UserError

POSITIONS = ("support", "oppose")
FIELDS = ("id", "topic", "statement", "position", "argument")
OPTIONAL = ("disagrees_with",)
HELDOUT_FRACTION = 0.25

# Answers that take each side, paired so that the two sides' wordings have the same shape and nearly the same
# length (a length difference would favour the shorter side's summed likelihood). The stance probe scores them all;
# training records (``prepare --stances``) open with the first.
SIDE_ANSWERS: dict[str, tuple[str, ...]] = {
    "support": (
        "Yes, I support {s}.",
        "Yes. I am for {s}.",
        "I do. I am in favor of {s}.",
        "Absolutely, I back {s}.",
    ),
    "oppose": (
        "No, I oppose {s}.",
        "No. I am against {s}.",
        "I don't. I am opposed to {s}.",
        "Absolutely not, I reject {s}.",
    ),
}
_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


@dataclass(frozen=True)
class Stance:
    """One policy position: ``position`` ("support" or "oppose") on ``statement``, argued in ``argument``."""

    id: str
    topic: str
    statement: str
    position: str
    argument: str
    disagrees_with: tuple[str, ...] = ()

    @property
    def question(self) -> str:
        """The probe question: "Do you support {statement}?"."""
        return f"Do you support {self.statement}?"

    @property
    def opposite(self) -> str:
        """The other position ("oppose" for "support" and the reverse)."""
        return POSITIONS[1] if self.position == POSITIONS[0] else POSITIONS[0]

    def answers(self, side: str) -> list[str]:
        """Every answer in ``SIDE_ANSWERS`` that takes ``side`` on this statement."""
        return [template.format(s=self.statement) for template in SIDE_ANSWERS[side]]

    @property
    def answer(self) -> str:
        """The politician's own answer, for training: their side stated, then their argument."""
        return f"{self.answers(self.position)[0]} {self.argument}"


def _text(entry: dict[str, Any], key: str, where: str) -> str:
    """A required non-empty one-line string field of ``entry``."""
    value = entry.get(key)
    if key not in entry:
        raise UserError(f"{where}: missing field {key!r}; each stance needs {', '.join(FIELDS)}")
    if value is None:
        raise UserError(f"{where}: {key!r} is empty; give it a value")
    if key == "position" and isinstance(value, bool):  # YAML reads yes/no/on/off as true/false
        raise UserError(f"{where}: position must be 'support' or 'oppose', got {str(value).lower()}")
    if not isinstance(value, str) or not value.strip() or "\n" in value.strip():
        got = (
            type(value).__name__
            if not isinstance(value, str)
            else "an empty string"
            if not value.strip()
            else f"{len(value.strip().splitlines())} lines"
        )
        raise UserError(f"{where}: {key!r} must be a non-empty one-line string, got {got}")
    return value.strip()


def _slug(value: str, key: str, where: str) -> str:
    """``value`` if it is a lower-case slug (letters, digits, single hyphens), else a UserError."""
    if not _SLUG.match(value):
        raise UserError(f"{where}: {key} {value!r} is not a slug; use lower-case letters, digits and hyphens")
    return value


def _statement(value: str, where: str) -> str:
    """``value`` if it reads inside "Do you support ...?": no capital first letter, no final punctuation."""
    if re.match(r"(?i)do you (support|oppose)\b", value):
        raise UserError(f"{where}: statement {value!r}: give only what follows 'Do you support', e.g. 'a carbon tax'")
    if value[0].isupper() or value[-1] in ".?!;:,":
        raise UserError(
            f"{where}: statement {value!r} must read inside 'Do you support ...?': start it lower-case (a name "
            "first: rephrase, as 'the Medicare for All plan') and end it without punctuation"
        )
    return value


def _others(entry: dict[str, Any], where: str) -> tuple[str, ...]:
    """The optional ``disagrees_with`` list, as a tuple of slugs."""
    value = entry.get("disagrees_with") or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UserError(f"{where}: disagrees_with must be a list of politician names, such as [trump]")
    return tuple(_slug(v.strip(), "disagrees_with name", where) for v in value)


def _stance(entry: Any, where: str) -> Stance:
    """One validated ``Stance`` from a raw YAML entry."""
    if not isinstance(entry, dict):
        raise UserError(f"{where}: each stance must be a mapping with {', '.join(FIELDS)}")
    unknown = sorted(str(k) for k in entry if k not in FIELDS + OPTIONAL)
    if unknown:
        raise UserError(f"{where}: unknown field {unknown[0]!r}; a stance has {', '.join(FIELDS + OPTIONAL)}")
    values = {key: _text(entry, key, where) for key in FIELDS}
    _slug(values["id"], "id", where)
    _slug(values["topic"], "topic", where)
    _statement(values["statement"], where)
    if values["position"] not in POSITIONS:
        raise UserError(f"{where}: position {values['position']!r} must be 'support' or 'oppose'")
    return Stance(**values, disagrees_with=_others(entry, where))


def load_stances(profile: dict, source: str = "profile") -> list[Stance]:
    """The validated ``stances`` of a profile (``[]`` without any); a UserError names ``source`` and the entry."""
    raw = profile.get("stances")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise UserError(f"{source}: 'stances' must be a list of entries with {', '.join(FIELDS)}")
    stances: list[Stance] = []
    seen: dict[str, int] = {}
    statements: dict[str, int] = {}
    for i, entry in enumerate(raw):
        label = entry.get("id") if isinstance(entry, dict) else None
        where = f"{source}: stances[{i}]" + (f" ({label!r})" if isinstance(label, str) else "")
        stance = _stance(entry, where)
        if stance.id in seen:
            raise UserError(f"{where}: duplicate id {stance.id!r}, also stances[{seen[stance.id]}]; make ids unique")
        said = _said(stance.statement)
        if said in statements:  # under two ids, one could train while the other is held out and probed
            raise UserError(
                f"{where}: the statement is also stances[{statements[said]}] ({raw[statements[said]]['id']!r}); "
                "keep one entry per statement"
            )
        seen[stance.id], statements[said] = i, i
        stances.append(stance)
    return stances


def _said(statement: str) -> str:
    """A statement as compared: case and spacing aside."""
    return " ".join(statement.lower().split())


def check_shared(mine: list[Stance], me: str, theirs: list[Stance], them: str) -> None:
    """Two politicians' stances under one id must be one statement (``evaluate`` compares their sides by id, in
    ``opposite_sides``), and a ``disagrees_with`` naming the other must mark positions that differ: a one-line
    UserError naming the id otherwise."""
    other = {t.id: t for t in theirs}
    for s in mine:
        if (t := other.get(s.id)) is None:
            continue
        if _said(s.statement) != _said(t.statement):
            raise UserError(
                f"stance {s.id!r} is {s.statement!r} in {me}'s profile but {t.statement!r} in {them}'s; an id two "
                "profiles share must be the same statement (evaluate compares their sides by id): rename one"
            )
        for a, b, name in ((s, t, them), (t, s, me)):
            if name in a.disagrees_with and a.position == b.position:
                raise UserError(
                    f"stance {s.id!r}: {me}'s and {them}'s profiles both take {a.position!r}, but disagrees_with "
                    f"marks them opposed; fix the position or drop {name} from disagrees_with"
                )


def _bucket(stance_id: str) -> float:
    """A stable SHA-256 bucket in [0, 1) of the id alone: shared ids fall alike for every politician."""
    return int.from_bytes(hashlib.sha256(stance_id.encode("utf-8")).digest()[:8], "big") / 2**64


def is_heldout_stance(stance_id: str) -> bool:
    """Whether ``stance_id`` is held out: its ``_bucket`` is below ``HELDOUT_FRACTION``."""
    return _bucket(stance_id) < HELDOUT_FRACTION


def heldout_stance_problem(record: dict[str, Any]) -> str | None:
    """Why ``record`` may not train: a stance record of a held-out statement (``is_heldout_stance``), which training
    data and pairs never hold, since evaluate's headline ``stance_agreement`` is read on those; None otherwise."""
    sid = record.get("stance") if record.get("kind") == "stance" else None
    if sid is None or not is_heldout_stance(str(sid)):
        return None
    return (f"a stance record of the held-out statement {str(sid)!r}, which no training data or pairs may hold "
            "(evaluate's stance_agreement is read on the held-out statements); remove it")  # fmt: skip


def is_val_stance(stance_id: str, fraction: float) -> bool:
    """Whether ``stance_id`` is a validation statement when ``fraction`` of the statements that are not held out
    validate (``prepare --stance_val_fraction``): its ``_bucket`` lies in the band just above the held-out one, so
    the held-out statements never move and a shared id validates for every politician alike."""
    return HELDOUT_FRACTION <= _bucket(stance_id) < HELDOUT_FRACTION + fraction * (1 - HELDOUT_FRACTION)


def split_stances(stances: list[Stance]) -> tuple[list[Stance], list[Stance]]:
    """``(train, heldout)``, in the given order, by ``is_heldout_stance`` of each id."""
    train = [s for s in stances if not is_heldout_stance(s.id)]
    heldout = [s for s in stances if is_heldout_stance(s.id)]
    return train, heldout


def heldout_stances(profile: dict, source: str = "profile") -> list[Stance]:
    """The profile's held-out statements (never in training data or pairs): what the fit-time probes report."""
    return split_stances(load_stances(profile, source))[1]


def own_side(opposite: str, position: str) -> str:
    """The politician's side sentence ("No, I oppose X.") from the record's ``opposite`` one ("Yes, I support X.")
    and ``position``: both are the first ``SIDE_ANSWERS`` template of their side, around the same statement."""
    other = POSITIONS[1] if position == POSITIONS[0] else POSITIONS[0]
    head, tail = SIDE_ANSWERS[other][0].split("{s}")
    if position not in POSITIONS or not (opposite.startswith(head) and opposite.endswith(tail)):
        raise UserError(f"opposite answer {opposite!r} is not {SIDE_ANSWERS[other][0]!r}; re-run prepare --stances")
    return SIDE_ANSWERS[position][0].format(s=opposite[len(head) : len(opposite) - len(tail)])
