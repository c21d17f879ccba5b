"""``scripts/stance_probe.py --baselines``: what the trained statements alone predict of the others' sides. It must
find a side that follows from the topic, and miss one that does not."""

import importlib.util

from politician_lm.artifacts.stances import Stance
from tests.helpers import ROOT


def _script():
    spec = importlib.util.spec_from_file_location("stance_probe", ROOT / "scripts" / "stance_probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stances(flip_asked: bool) -> tuple[list[Stance], list[Stance]]:
    topics = {"trade": "support", "climate": "oppose", "guns": "support", "taxes": "oppose"}
    fit = [Stance(f"{t}-{i}", t, f"{t} policy number {i}", side, "x") for t, side in topics.items() for i in range(4)]
    flip = {"support": "oppose", "oppose": "support"}
    asked = [
        Stance(f"{t}-new", t, f"{t} policy number 9", flip[side] if flip_asked else side, "x")
        for t, side in topics.items()
    ]
    return fit, asked


def test_baselines_predict_sides_that_follow_from_the_topic_and_miss_those_that_do_not():
    predict = _script().predict_sides
    for flip, expected in ((False, 1.0), (True, 0.0)):
        fit, asked = _stances(flip)
        for name, sides in predict(fit, asked).items():
            right = sum(g == s.position for g, s in zip(sides, asked)) / len(asked)
            assert right == expected, f"{name}: {right} with the asked sides {'flipped' if flip else 'kept'}"
