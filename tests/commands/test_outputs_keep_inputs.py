"""An output folder never swallows an input: with --overwrite true, a command whose --output_dir is or holds its
data or an adapter refuses in one line before any work, and the input is still there."""

import pytest

from politician_lm.commands.evaluate import evaluate
from politician_lm.commands.export import export
from politician_lm.commands.merge import merge
from politician_lm.commands.pairs import pairs
from politician_lm.errors import UserError
from tests.helpers import fit_adapter, pc_rows


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_path):
    root = tmp_path_factory.mktemp("run")
    fit_adapter(root, tiny_path, pc_rows(8), max_steps=1)
    return root


def _calls(run, tiny_path):
    adapter, data = str(run / "adapters" / "last"), str(run / "data")
    return {
        "evaluate into its data": lambda: evaluate(
            adapter, output_dir=data, data_path=data, politician="biden", overwrite=True
        ),
        "evaluate into the run": lambda: evaluate(adapter, output_dir=str(run), politician="biden", overwrite=True),
        "pairs into its data": lambda: pairs(data, data, base_model=tiny_path, rejected="side", overwrite=True),
        "merge into the run": lambda: merge([adapter], [1.0], str(run), overwrite=True),
        "export into the run": lambda: export(adapter, str(run), overwrite=True),
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    ["evaluate into its data", "evaluate into the run", "pairs into its data", "merge into the run",
     "export into the run"],
)  # fmt: skip
def test_an_output_that_holds_an_input_is_refused_even_with_overwrite(case, run, tiny_path):
    call = _calls(run, tiny_path)[case]
    before = sorted(p.name for p in run.rglob("*"))
    with pytest.raises(UserError, match=r"the output folder holds the input .*choose another --output_dir"):
        call()
    assert sorted(p.name for p in run.rglob("*")) == before
