"""How ``prepare`` treats the paths and values a user types: a file name with commas is one file, a mistyped output
that names a file is refused, and every error says what to change. Every line here is written for the test."""

import pytest

from politician_lm.artifacts.atomic import atomic_dir
from politician_lm.commands.prepare import prepare
from politician_lm.errors import UserError
from tests.helpers import ROOT

TINY = str(ROOT / "checkpoints" / "tiny-politician")
SPEECH = "".join(f"We will fix road number {i}. It will be done this year. Thank you, Dayton.\n\n" for i in range(40))


def test_a_file_name_with_commas_is_one_file(tmp_path):
    (tmp_path / "2024,March").mkdir()
    speech = tmp_path / "2024,March" / "Dayton, Ohio.txt"
    speech.write_text(SPEECH, "utf-8")
    out = prepare(str(tmp_path / "out"), transcripts=str(speech), tokenizer=TINY, val_fraction=0.3)
    assert (out / "train.jsonl").read_text("utf-8").count('"source": "Dayton, Ohio.txt"') > 0


def test_an_output_dir_that_is_a_file_is_refused_even_with_overwrite(tmp_path):
    (tmp_path / "notes.txt").write_text("mine", "utf-8")
    with pytest.raises(UserError, match="notes.txt: is a file, and --output_dir names the folder to write"):
        prepare(str(tmp_path / "notes.txt"), identity_profile="biden", tokenizer=TINY, overwrite=True)
    assert (tmp_path / "notes.txt").read_text("utf-8") == "mine"


def test_a_folder_written_over_a_file_leaves_nothing_beside_it(tmp_path):
    (tmp_path / "target").write_text("old", "utf-8")
    with atomic_dir(tmp_path / "target") as tmp:
        (tmp / "a.txt").write_text("new", "utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target"]
    assert (tmp_path / "target" / "a.txt").read_text("utf-8") == "new"


@pytest.mark.parametrize(
    "value,message",
    [
        ({"val_fraction": 0.0}, "--val_fraction 0.0 is out of range: it must be above 0 and below 1"),
        ({"max_completion_tokens": 0}, "--max_completion_tokens 0 is out of range: it must be at least 1"),
        ({"stance_val_fraction": 1.0}, "--stance_val_fraction 1.0 is out of range: it must be at least 0 and below 1"),
    ],
)
def test_a_value_out_of_range_says_the_range(value, message, tmp_path):
    with pytest.raises(UserError, match=message):
        prepare(str(tmp_path / "out"), identity_profile="biden", tokenizer=TINY, **value)


def test_inputs_that_make_no_record_say_so_and_why(tmp_path):
    (tmp_path / "one.txt").write_text("We will fix the roads in every county of this state.\n", "utf-8")
    with pytest.raises(UserError, match=r"the inputs made no records \(dropped: {'too_short': 1}\)"):
        prepare(str(tmp_path / "out"), transcripts=str(tmp_path / "one.txt"), tokenizer=TINY)
