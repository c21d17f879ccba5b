import pytest

from politician_lm.artifacts.jsonl import read_jsonl, write_jsonl
from politician_lm.errors import UserError


def test_round_trip_keeps_utf8_and_skips_blank_lines(tmp_path):
    rows = [{"prompt": "USER: ¿Qué tal?", "n": 1}, {"prompt": "USER: “quotes”", "n": 2}]
    path = write_jsonl(tmp_path / "sub" / "rows.jsonl", rows)
    assert "¿Qué" in path.read_text(encoding="utf-8")  # written as UTF-8, not \\u escapes
    path.write_text(path.read_text(encoding="utf-8") + "\n\n", encoding="utf-8")
    assert list(read_jsonl(path)) == [(1, rows[0]), (2, rows[1])]
    assert [p.name for p in path.parent.iterdir()] == ["rows.jsonl"]  # no temporary left beside it


@pytest.mark.parametrize(
    "content,message",
    [
        (b'{"a": 1}\n{"a": \n', r"b.jsonl:2: malformed JSON"),
        (b'{"a": 1}\n\n{"a": "caf\xe9"}\n', r"b.jsonl:3: not valid UTF-8"),
    ],
)
def test_errors_name_the_file_and_line(tmp_path, content, message):
    path = tmp_path / "b.jsonl"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        list(read_jsonl(path))


def test_a_failed_write_leaves_the_old_file(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"a": 1}])
    with pytest.raises(TypeError):
        write_jsonl(path, [{"a": object()}])
    assert list(read_jsonl(path)) == [(1, {"a": 1})]
    assert [p.name for p in tmp_path.iterdir()] == ["rows.jsonl"]
