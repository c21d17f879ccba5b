"""Hostile and broken inputs across every command that reads files: one line naming the file (and line),
exit status 2, and nothing written. Plus property-based fuzzing of the record reader."""

import json
import shutil

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from politician_lm.cli import main
from politician_lm.data import records
from politician_lm.errors import UserError
from tests.helpers import fit_adapter, pc_rows

GOOD = '{"prompt": "USER: hi", "completion": "POLITICIAN: folks"}\n'


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_path):
    return fit_adapter(tmp_path_factory.mktemp("adapter"), tiny_path, pc_rows(8), max_steps=1)


def broken_adapter(t, src, how):
    bad = t / f"adapter-{how}"
    shutil.copytree(src, bad)
    weights = bad / "adapter_model.safetensors"
    if how == "truncated":
        weights.write_bytes(weights.read_bytes()[:200])
    elif how == "no-config":
        (bad / "adapter_config.json").unlink()
    elif how == "config-not-json":
        (bad / "adapter_config.json").write_text("{not json")
    elif how == "pickle":
        weights.unlink()
        (bad / "adapter_model.bin").write_bytes(b"\x80\x04K\x01.")
    elif how == "shapes":
        tensors = load_file(weights)
        key = next(k for k in tensors if "lora_A" in k)
        tensors[key] = tensors[key][:, :-3].contiguous()
        save_file(tensors, weights)
    elif how == "other-base":
        cfg = json.loads((bad / "adapter_config.json").read_text())
        cfg["base_model_name_or_path"] = "mistralai/Mistral-7B-v0.1"
        (bad / "adapter_config.json").write_text(json.dumps(cfg))
    return bad


def file(t, name, content, binary=False):
    path = t / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if binary else content.encode())
    return path


def fit(t, data, *extra):
    return [
        "fit",
        "--config",
        "configs/demo.yaml",
        "--data.data_path",
        str(data),
        "--trainer.default_root_dir",
        str(t / "out"),
        *extra,
    ]


# (case id, build(tmp, adapter) -> argv, the file the message must name, fragment of the message)
CASES = [
    # fit: JSONL data, YAML configs, profiles
    (
        "fit-jsonl-malformed",
        lambda t, a: fit(t, file(t, "d.jsonl", GOOD + '{"prompt": ')),
        "d.jsonl:2",
        "malformed JSON",
    ),
    (
        "fit-jsonl-messages-type",
        lambda t, a: fit(t, file(t, "d.jsonl", '{"messages": "hi"}\n')),
        "d.jsonl:1",
        "messages",
    ),
    ("fit-jsonl-binary", lambda t, a: fit(t, file(t, "d.jsonl", b"\xff\xfe\x00garbage\n", True)), "d.jsonl:1", "UTF-8"),
    ("fit-jsonl-null", lambda t, a: fit(t, file(t, "d.jsonl", "null\n")), "d.jsonl:1", "JSON object"),
    ("fit-config-syntax", lambda t, a: ["fit", "--config", str(file(t, "c.yaml", "model: [unclosed\n"))], "c.yaml", ""),
    (
        "fit-config-unknown-key",
        lambda t, a: [
            "fit",
            "--config",
            "configs/demo.yaml",
            "--config",
            str(file(t, "c.yaml", "model:\n  lora_rank: 8\n")),
        ],
        "c.yaml",
        "lora_rank",
    ),
    (
        "fit-config-wrong-type",
        lambda t, a: [
            "fit",
            "--config",
            "configs/demo.yaml",
            "--config",
            str(file(t, "c.yaml", "model:\n  lora_r: many\n")),
        ],
        "c.yaml",
        "lora_r",
    ),
    (
        "fit-profile-broken",
        lambda t, a: fit(
            t,
            file(t, "d.jsonl", GOOD * 4),
            "--data.politician",
            "x",
            "--data.profiles_dir",
            str(file(t, "profiles/x.yaml", "name: [oops\n").parent),
        ),
        "x.yaml",
        "YAML",
    ),
    # merge: adapter folders and weights
    (
        "merge-truncated",
        lambda t, a: [
            "merge",
            "--adapters",
            f"{a},{broken_adapter(t, a, 'truncated')}",
            "--weights",
            "1,1",
            "--output_dir",
            str(t / "out"),
        ],
        "adapter_model.safetensors",
        "safetensors",
    ),
    (
        "merge-no-config",
        lambda t, a: [
            "merge",
            "--adapters",
            f"{a},{broken_adapter(t, a, 'no-config')}",
            "--weights",
            "1,1",
            "--output_dir",
            str(t / "out"),
        ],
        "adapter-no-config",
        "adapter_config.json",
    ),
    (
        "merge-config-not-json",
        lambda t, a: [
            "merge",
            "--adapters",
            f"{a},{broken_adapter(t, a, 'config-not-json')}",
            "--weights",
            "1,1",
            "--output_dir",
            str(t / "out"),
        ],
        "adapter_config.json",
        "JSON",
    ),
    (
        "merge-pickle",
        lambda t, a: [
            "merge",
            "--adapters",
            f"{a},{broken_adapter(t, a, 'pickle')}",
            "--weights",
            "1,1",
            "--output_dir",
            str(t / "out"),
        ],
        "adapter_model.bin",
        "pickle",
    ),
    (
        "merge-other-base",
        lambda t, a: [
            "merge",
            "--adapters",
            f"{a},{broken_adapter(t, a, 'other-base')}",
            "--weights",
            "1,1",
            "--output_dir",
            str(t / "out"),
        ],
        "adapter-other-base",
        "base model",
    ),
    (
        "merge-shapes",
        lambda t, a: [
            "merge",
            "--adapters",
            f"{a},{broken_adapter(t, a, 'shapes')}",
            "--weights",
            "1,1",
            "--output_dir",
            str(t / "out"),
        ],
        "adapter-shapes",
        "does not fit",
    ),
    (
        "merge-weight-nan",
        lambda t, a: [
            "merge",
            "--adapters",
            f"{a},{broken_adapter(t, a, 'other-base')}",
            "--weights",
            "nan,1",
            "--output_dir",
            str(t / "out"),
        ],
        "--weights",
        "finite",
    ),
    (
        "merge-weight-negative",
        lambda t, a: [
            "merge",
            "--adapters",
            f"{a},{broken_adapter(t, a, 'other-base')}",
            "--weights=-1,1",
            "--method",
            "ties",
            "--density",
            "0.5",
            "--output_dir",
            str(t / "out"),
        ],
        "--weights",
        "negative",
    ),
    (
        "merge-weight-empty",
        lambda t, a: ["merge", "--adapters", str(a), "--weights", "[]", "--output_dir", str(t / "out")],
        "--weights",
        "empty",
    ),
    # export
    (
        "export-truncated",
        lambda t, a: ["export", "--adapter", str(broken_adapter(t, a, "truncated")), "--output_dir", str(t / "out")],
        "adapter_model.safetensors",
        "safetensors",
    ),
    (
        "export-shapes",
        lambda t, a: ["export", "--adapter", str(broken_adapter(t, a, "shapes")), "--output_dir", str(t / "out")],
        "adapter-shapes",
        "does not fit",
    ),
    (
        "export-adapter-is-a-file",
        lambda t, a: ["export", "--adapter", str(file(t, "notadir", "x")), "--output_dir", str(t / "out")],
        "notadir",
        "does not exist",
    ),
    # generate / chat: prompts, adapters, registry
    (
        "generate-prompts-malformed",
        lambda t, a: [
            "generate",
            "--adapters",
            str(a),
            "--prompts_file",
            str(file(t, "p.jsonl", '{"prompt": "a"}\n{"prompt": 3}\n')),
            "--output",
            str(t / "out"),
        ],
        "p.jsonl:2",
        "prompt",
    ),
    (
        "generate-prompts-binary",
        lambda t, a: [
            "generate",
            "--adapters",
            str(a),
            "--prompts_file",
            str(file(t, "p.jsonl", b"\x00\xff\xfe\n", True)),
            "--output",
            str(t / "out"),
        ],
        "p.jsonl:1",
        "UTF-8",
    ),
    (
        "generate-prompts-empty",
        lambda t, a: [
            "generate",
            "--adapters",
            str(a),
            "--prompts_file",
            str(file(t, "p.jsonl", "")),
            "--output",
            str(t / "out"),
        ],
        "p.jsonl",
        "empty",
    ),
    (
        "generate-shapes",
        lambda t, a: [
            "generate",
            "--adapters",
            str(broken_adapter(t, a, "shapes")),
            "--prompt",
            "hi",
            "--output",
            str(t / "out"),
        ],
        "adapter-shapes",
        "does not fit",
    ),
    (
        "generate-mixed-bases",
        lambda t, a: [
            "generate",
            "--adapters",
            f"{a},{broken_adapter(t, a, 'other-base')}",
            "--prompt",
            "hi",
            "--output",
            str(t / "out"),
        ],
        "adapter-other-base",
        "base model",
    ),
    (
        "chat-registry-syntax",
        lambda t, a: ["chat", "--politician", "biden", "--registry", str(file(t, "models.yaml", "biden: [\n"))],
        "models.yaml",
        "YAML",
    ),
    (
        "chat-registry-shape",
        lambda t, a: [
            "chat",
            "--politician",
            "biden",
            "--registry",
            str(file(t, "models.yaml", "biden:\n  adapters: [a, b]\n")),
        ],
        "models.yaml",
        "adapters",
    ),
    # evaluate and stages
    (
        "evaluate-data-malformed",
        lambda t, a: [
            "evaluate",
            "--adapters",
            str(a),
            "--data_path",
            str(file(t, "e.jsonl", GOOD + "{]\n")),
            "--output_dir",
            str(t / "out"),
        ],
        "e.jsonl:2",
        "malformed JSON",
    ),
    (
        "evaluate-log-missing",
        lambda t, a: [
            "evaluate",
            "--adapters",
            str(a),
            "--data_path",
            "data/biden",
            "--logs",
            str(t / "metrics.csv"),
            "--output_dir",
            str(t / "out"),
        ],
        "metrics.csv",
        "not found",
    ),
    (
        "stages-base-missing",
        lambda t, a: [
            "stages",
            "--config",
            str(
                file(
                    t,
                    "s.yaml",
                    yaml.safe_dump(
                        {
                            "base_config": str(t / "nope.yaml"),
                            "root_dir": str(t / "out"),
                            "stages": [{"name": "a", "kinds": ["style"]}],
                        }
                    ),
                )
            ),
        ],
        "nope.yaml",
        "not found",
    ),
    # prepare: transcripts, interviews, tables
    (
        "prepare-csv-no-column",
        lambda t, a: [
            "prepare",
            "--table",
            str(file(t, "posts.csv", "body\nhello there folks\n")),
            "--output_dir",
            str(t / "out"),
        ],
        "posts.csv",
        "text",
    ),
    (
        "prepare-transcript-binary",
        lambda t, a: [
            "prepare",
            "--transcripts",
            str(file(t, "speech.txt", b"\xff\xfe\x00\x81", True)),
            "--output_dir",
            str(t / "out"),
        ],
        "speech.txt",
        "UTF-8",
    ),
    (
        "prepare-table-jsonl-malformed",
        lambda t, a: [
            "prepare",
            "--table",
            str(file(t, "q.jsonl", '{"text": "a b c d e f"}\n{oops\n')),
            "--output_dir",
            str(t / "out"),
        ],
        "q.jsonl:2",
        "",
    ),
    (
        "prepare-interviews-no-speaker",
        lambda t, a: [
            "prepare",
            "--interviews",
            str(file(t, "brief.txt", "Q Hi?\n\nTHE PRESIDENT: Yes.\n")),
            "--output_dir",
            str(t / "out"),
        ],
        "brief.txt",
        "--speaker",
    ),
]


@pytest.mark.parametrize("case,build,names,fragment", CASES, ids=[c[0] for c in CASES])
@pytest.mark.slow
def test_hostile_input(case, build, names, fragment, adapter, tmp_path, capsys, chdir_root):
    argv = build(tmp_path, adapter)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert exc.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("politician-lm: error:"), err
    assert names in lines[0] and fragment in lines[0], lines[0]
    assert not (tmp_path / "out").exists(), "no partial output"


def test_there_are_at_least_25_cases():
    assert len(CASES) >= 25 and len({c[0].split("-")[0] for c in CASES}) >= 7


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_random_bytes_give_a_clean_error_or_records(tmp_path, data):
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(data)
    try:
        assert records.validate_file(path).total() >= 1
    except UserError as e:
        assert str(e).startswith(str(path)) and "\n" not in str(e)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["prompt", "completion", "messages", "role", "content", "kind", "x"]), inner, max_size=5
        )
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(JSON, min_size=1, max_size=5))
@pytest.mark.slow
def test_random_json_records_give_a_clean_error_or_valid_records(tmp_path, rows):
    path = tmp_path / "fuzz.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    try:
        n = records.validate_file(path)
    except UserError as e:
        assert str(e).startswith(str(path)) and "\n" not in str(e)
        return
    assert n.total() == len(rows)  # records per kind
    for r in rows:  # what validates must convert
        conv = records.to_conversation(r)
        assert conv["messages"][-1]["role"] == "assistant"
