"""PoliticianDataModule: data_path layouts, seeded split, chat records, kinds, metadata and the datasets cache."""

import json

import pytest
import torch

from politician_lm import PoliticianDataModule
from politician_lm.batch import IGNORE_INDEX
from tests.helpers import pc_rows, write_jsonl


def make_dm(data_path, tiny_path, tmp_path, **kw):
    kw.setdefault("cache_dir", str(tmp_path / "hf-cache"))
    dm = PoliticianDataModule(data_path=str(data_path), tokenizer=tiny_path, **kw)
    dm.setup("fit")
    return dm


def val_prompts(dm):
    return sorted(json.dumps(m) for m in dm.val_dataset["messages"])


def test_single_file_split_is_seeded_and_deterministic(tmp_path, tiny_path):
    f = write_jsonl(tmp_path / "d.jsonl", pc_rows(40))
    a = make_dm(f, tiny_path, tmp_path, val_fraction=0.25, seed=1)
    b = make_dm(f, tiny_path, tmp_path, val_fraction=0.25, seed=1)
    c = make_dm(f, tiny_path, tmp_path, val_fraction=0.25, seed=2)
    assert len(a.train_dataset) + len(a.val_dataset) == 40 and 4 <= len(a.val_dataset) <= 18
    assert val_prompts(a) == val_prompts(b)
    assert val_prompts(a) != val_prompts(c)
    assert not set(val_prompts(a)) & {json.dumps(m) for m in a.train_dataset["messages"]}


def test_split_is_stable_when_records_are_added_and_keeps_duplicates_together(tmp_path, tiny_path):
    rows = pc_rows(40)
    a = make_dm(write_jsonl(tmp_path / "a.jsonl", rows), tiny_path, tmp_path, val_fraction=0.3)
    dup = dict(rows[0], prompt=rows[0]["prompt"].upper() + "  ")  # same text up to case and spacing
    b = make_dm(
        write_jsonl(tmp_path / "b.jsonl", rows + pc_rows(60)[40:] + [dup]), tiny_path, tmp_path, val_fraction=0.3
    )
    assert set(val_prompts(a)) <= set(val_prompts(b))  # old records keep their side
    first_in_val = json.dumps(rows[0] and a.val_dataset["messages"][0]) in val_prompts(a)
    sides = [
        "val" if r["prompt"] in [m[0]["content"] for m in b.val_dataset["messages"]] else "train"
        for r in (rows[0], dup)
    ]
    assert sides[0] == sides[1] and first_in_val


def test_folder_of_files_and_train_val_folder(tmp_path, tiny_path):
    write_jsonl(tmp_path / "many" / "style.jsonl", pc_rows(10, "style"))
    write_jsonl(tmp_path / "many" / "policy.jsonl", pc_rows(10, "policy"))
    dm = make_dm(tmp_path / "many", tiny_path, tmp_path, val_fraction=0.2)
    assert len(dm.train_dataset) + len(dm.val_dataset) == 20
    assert set(dm.train_dataset["kind"]) | set(dm.val_dataset["kind"]) == {"style", "policy"}

    write_jsonl(tmp_path / "split" / "train.jsonl", pc_rows(12))
    write_jsonl(tmp_path / "split" / "val.jsonl", pc_rows(3))
    dm = make_dm(tmp_path / "split", tiny_path, tmp_path)
    assert (len(dm.train_dataset), len(dm.val_dataset)) == (12, 3)


def test_kinds_selects_records_and_metadata_is_kept(tmp_path, tiny_path):
    write_jsonl(tmp_path / "d" / "a.jsonl", pc_rows(8, "style") + pc_rows(8, "identity"))
    dm = make_dm(tmp_path / "d", tiny_path, tmp_path, kinds=["style"], val_fraction=0.25)
    assert set(dm.train_dataset["kind"]) == {"style"} and len(dm.train_dataset) + len(dm.val_dataset) == 8
    assert json.loads(dm.train_dataset[0]["metadata"])["topic"].startswith("t")


def test_a_date_column_is_kept_as_metadata(tmp_path, tiny_path):
    # prepare writes each address's date ("2024-03-07"), which the JSON reader of datasets parses as a date
    rows = [r | {"date": f"2024-03-{i + 1:02d}"} for i, r in enumerate(pc_rows(8))]
    dm = make_dm(write_jsonl(tmp_path / "d.jsonl", rows), tiny_path, tmp_path, val_fraction=0.25)
    dates = {json.loads(m)["date"][:10] for m in [*dm.train_dataset["metadata"], *dm.val_dataset["metadata"]]}
    assert dates == {r["date"] for r in rows}


def test_chat_records_and_persona_system_prompt(tmp_path, tiny_path, tokenizer, chdir_root):
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Who are you, number {i}?"},
                {"role": "assistant", "content": "I'm Joe Biden, folks."},
            ],
            "kind": "identity",
        }
        for i in range(6)
    ]
    f = write_jsonl(tmp_path / "chat.jsonl", rows)
    dm = make_dm(f, tiny_path, tmp_path, prompt_format="chat", politician="biden", val_fraction=0.34)
    ex = dm.train_dataset[0]
    text = tokenizer.decode(ex["input_ids"])
    assert dm.style.system_prompt and dm.style.system_prompt in text
    learned = tokenizer.decode([t for t in ex["labels"] if t != IGNORE_INDEX], skip_special_tokens=True)
    assert learned.strip() == "I'm Joe Biden, folks."


def test_batches_pad_labels_with_ignore_index(tmp_path, tiny_path, tokenizer):
    rows = pc_rows(6) + [{"prompt": "USER: hi", "completion": "POLITICIAN: " + "long answer " * 20}]
    dm = make_dm(write_jsonl(tmp_path / "d.jsonl", rows), tiny_path, tmp_path, batch_size=7, val_fraction=0.2)
    dm.train_dataset = dm.train_dataset.select(range(len(dm.train_dataset)))
    batch = next(iter(dm._loader(dm.train_dataset, 16, shuffle=False)))
    assert set(batch) >= {"input_ids", "labels", "attention_mask"}
    pad = batch["attention_mask"] == 0
    assert pad.any(), "rows of different length must be padded"
    assert (batch["labels"][pad] == IGNORE_INDEX).all()
    assert batch["input_ids"].dtype == torch.long


def test_overlong_examples_are_counted_in_the_log(tmp_path, tiny_path, caplog):
    long_rows = [{"prompt": f"USER: go {i}", "completion": "POLITICIAN: " + "folks " * 200} for i in range(2)]
    write_jsonl(tmp_path / "d" / "train.jsonl", pc_rows(10) + long_rows)
    write_jsonl(tmp_path / "d" / "val.jsonl", pc_rows(3))
    with caplog.at_level("WARNING"):
        dm = make_dm(tmp_path / "d", tiny_path, tmp_path, max_length=48, overlong="drop")
    assert len(dm.train_dataset) == 10
    assert "train: 2 of 12 examples longer than max_length=48: 0 truncated, 2 dropped" in caplog.text


def test_a_folder_whose_val_holds_the_held_out_documents_is_named_in_a_warning(tmp_path, tiny_path, caplog):
    write_jsonl(tmp_path / "d" / "train.jsonl", pc_rows(10))
    write_jsonl(tmp_path / "d" / "val.jsonl", pc_rows(3))
    split = {"rule": "document", "heldout_documents": ["2024-Biden-1"], "val_fraction": 0.1, "seed": 42}
    (tmp_path / "d" / "stats.json").write_text(json.dumps({"split": split}))
    with caplog.at_level("WARNING"):  # prepared before test.jsonl existed: val is the held-out address
        make_dm(tmp_path / "d", tiny_path, tmp_path)
    assert "val.jsonl holds the held-out documents, so val_loss would select on them" in caplog.text
    caplog.clear()
    write_jsonl(tmp_path / "d" / "test.jsonl", pc_rows(2))
    with caplog.at_level("WARNING"):  # as prepare writes it now: fit never reads test.jsonl
        dm = make_dm(tmp_path / "d", tiny_path, tmp_path)
    assert "held-out documents" not in caplog.text
    assert len(dm.train_dataset) + len(dm.val_dataset) == 13


def test_tokenized_data_is_cached_on_disk(tmp_path, tiny_path):
    f = write_jsonl(tmp_path / "d.jsonl", pc_rows(20))
    dm = make_dm(f, tiny_path, tmp_path)
    files = dm.train_dataset.cache_files
    assert files and all(str(tmp_path / "hf-cache") in c["filename"] for c in files)
    again = make_dm(f, tiny_path, tmp_path)
    assert again.train_dataset.cache_files == files  # same fingerprint: read back, not recomputed


@pytest.mark.parametrize("kw", [{"val_fraction": 0.0}, {"val_fraction": 1.0}, {"max_length": 1}])
def test_bad_settings_are_user_errors(tmp_path, tiny_path, kw):
    from politician_lm import UserError

    with pytest.raises(UserError):
        PoliticianDataModule(data_path=str(write_jsonl(tmp_path / "d.jsonl", pc_rows(4))), tokenizer=tiny_path, **kw)


def test_data_prepared_for_another_politician_is_refused_in_one_line(tmp_path, tiny_path):
    """Data prepared from Quill's profile, fitted with a config's data.politician (biden), would train Quill's
    identity records under Biden's system prompt and judge Biden's metrics: refused before any model loads."""
    from politician_lm.commands.prepare import prepare
    from politician_lm.errors import UserError

    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "quill.yaml").write_text(
        'name: Maren Quill\ntitle: Governor\nparty: Harbor\nsystem_prompt: "You are Governor Maren Quill."\n'
    )
    speech = " ".join(f"On the harbor road number {i}, we will fix the locks and the ferries." for i in range(40))
    (tmp_path / "speech.txt").write_text(speech + "\n")
    data = prepare(str(tmp_path / "data"), transcripts=[str(tmp_path / "speech.txt")], tokenizer=tiny_path,
                   identity_profile=str(profiles / "quill.yaml"), val_fraction=0.3, cluster_threshold=1.0)  # fmt: skip
    with pytest.raises(UserError, match=r"prepared for 'quill' \(prepare --identity_profile\), but --data.politician "
                                        r"is 'biden': pass --data.politician quill") as e:  # fmt: skip
        PoliticianDataModule(data_path=str(data), tokenizer=tiny_path, politician="biden")
    assert "\n" not in str(e.value)
    dm = PoliticianDataModule(data_path=str(data), tokenizer=tiny_path, politician="quill", profiles_dir=str(profiles))
    assert dm.style.system_prompt == "You are Governor Maren Quill."


@pytest.mark.slow  # SmolLM2's tokenizer
def test_chat_without_a_system_prompt_warns_when_the_template_writes_its_own(tmp_path, smollm2, caplog):
    """SmolLM2's template writes "You are a helpful AI assistant named SmolLM" when no system turn is given: a
    config without data.politician or data.system_prompt trained the persona under that identity, silently."""
    import logging

    rows = [{"prompt": f"USER: What about the canal, part {i}?", "completion": "POLITICIAN: We dig."} for i in range(6)]
    f = write_jsonl(tmp_path / "d.jsonl", rows)
    with caplog.at_level(logging.WARNING):
        dm = make_dm(f, smollm2, tmp_path, prompt_format="chat", val_fraction=0.34)
    text = dm.tokenizer.decode(dm.train_dataset[0]["input_ids"])
    assert "named SmolLM" in text  # what the warning is about: every training row carries it
    assert "the tokenizer's chat template writes its own (<|im_start|>system You are a helpful AI assistant" in (
        caplog.text
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        make_dm(f, smollm2, tmp_path / "b", prompt_format="chat", system_prompt="You are Governor Quill.",
                val_fraction=0.34)  # fmt: skip
    assert "writes its own" not in caplog.text
