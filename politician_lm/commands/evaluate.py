"""``politician-lm evaluate``: the persona scorecard. Every arm answers the same held-out prompts, greedily:

* ``base``: the base model with no persona (its own default system prompt, if its template has one);
* ``prompt-only``: the base given only the persona's system prompt, the baseline a fine-tune must beat;
* each adapter and merged adapter, rendering prompts exactly as it was trained (another politician's adapter is
  simply another adapter: it is scored against its own politician and shows up in the confusion matrix).

Metrics per arm, each with a bootstrap 95% interval, and the paired difference of every adapter to prompt-only
(and of every later adapter to the first one, e.g. SFT followed by DPO against SFT alone):
style attribution (a classifier that also knows a ``generic`` class: the base model's own answers without persona),
identity on probe questions worded unlike the training ones, memorization (12-word verbatim copies of training
completions), the loss on held-out completions and distinct-2 (the share of an answer's word bigrams that are not
repeats within it: degeneration lowers it; the corpus-wide distinct-1/2 of each arm's answers is reported too),
and stance agreement: the side of each held-out policy statement of the profile the arm takes, read from its
likelihoods of answers on either side (``evaluation.stances``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Literal

from politician_lm.artifacts.adapter import check_loadable
from politician_lm.artifacts.atomic import atomic_dir, check_output
from politician_lm.artifacts.jsonl import jsonl_text
from politician_lm.artifacts.profiles import load_profile
from politician_lm.errors import UserError
from politician_lm.evaluation.heldout import DEFAULT_MAX_HELDOUT
from politician_lm.evaluation.inputs import (
    adapter_folders,
    check_arm_profiles,
    check_numbers,
    choose_judge,
    generic_texts_pool,
    held_out,
    other_training_completions,
    stance_note,
    training_logs,
)
from politician_lm.evaluation.lineage import check_held_apart, evaluated_data
from politician_lm.evaluation.probes import DEFAULT_IDENTITY_PROBES, probe_items
from politician_lm.values import check_choice

__all__ = ["evaluate"]

StanceSet = Literal["heldout", "val", "all", "none"]


def evaluate(
    adapters: list[str] | str,
    output_dir: str,
    data_path: str | None = None,
    merged: list[str] | str | None = None,
    base_model: str | None = None,
    politician: str | None = None,
    prompts_file: str | None = None,
    identity_probes: str = DEFAULT_IDENTITY_PROBES,
    logs: list[str] | str | None = None,
    num_prompts: int = 60,
    max_new_tokens: int = 64,
    repetition_penalty: float = 1.0,
    batch_size: int = 128,
    loss_batch_size: int = 8,
    seed: int = 0,
    val_fraction: float | None = None,
    split_seed: int | None = None,
    style_data_dir: str = "data",
    profiles_dir: str = "data/profiles",
    generic_prompts: int = 96,
    memorization_words: int = 12,
    judge: Literal["auto", "records", "sotu"] = "auto",
    judge_presidents: list[str] | str = "biden,trump,obama",
    max_heldout: int | None = DEFAULT_MAX_HELDOUT,
    stances: StanceSet = "heldout",
    n_boot: int = 2000,
    cache_arms: bool = True,
    pool_adapters: bool = False,
    overwrite: bool = False,
    allow_pickle: bool = False,
) -> Path:
    """Persona scorecard: base, prompt-only and every adapter on the same held-out prompts, with 95% intervals.

    Args:
        adapters: Adapter folders, as ``a,b`` or a list; the first one's politician is the target.
        output_dir: Folder for metrics.json, report.html, samples.jsonl and heldout_losses.jsonl (written atomically).
        data_path: JSONL file or folder whose held-out records give the prompts and the loss: a prepared folder's
            test.jsonl (its held-out documents, which fit never reads), else its validation split (default: the data
            the first adapter was trained on).
        merged: Merged adapter folders (from ``politician-lm merge``) to score as well.
        base_model: Base model (default: the adapters' base).
        politician: Target politician (default: from the first adapter's metadata).
        prompts_file: Your own JSONL of probe prompts (``{"prompt", "kind"}``); ``kind: identity`` rows are scored for
            identity, the rest for style. Default: the held-out split plus ``identity_probes``.
        identity_probes: Identity questions worded unlike the training ones (a JSONL file, relative to the working
            folder; ``none``: no identity metrics). A file that does not exist is refused, and so is another file
            beside ``prompts_file``, which brings its own.
        logs: Lightning ``metrics.csv`` files whose loss and persona curves go into the report.
        num_prompts: Most held-out prompts generated for (a seeded choice).
        max_new_tokens: Longest generation per prompt (greedy).
        repetition_penalty: Greedy decoding's repetition penalty for every arm and the judge's generic class alike
            (1.0: none; the chat presets in configs/models.yaml use 1.2): reads a persona as it is served rather
            than as plain greedy decoding, which loops on small models. Recorded in metrics.json.
        batch_size: Most prompts generated together. The default takes an arm's 76 prompts (60 style, 16
            identity) and the 96 generic ones each in one batch: a batch pays a fixed cost per new token (reading
            the weights), so a short last batch is dear. On SmolLM2, 2 CPU cores, 76 prompts took 0.86x the time
            in one batch as at 64 (64 + 12), and 0.86x at 64 as at 16, with the same answers.
        loss_batch_size: Held-out completions scored together (on SmolLM2, 2 CPU cores, 64 held-out completions
            took 17.2 s at 4, 17.2-18.1 s at 8 and 20.5 s at 16: smaller batches move less memory per row).
        seed: Seed of the prompt choice and of the bootstrap.
        val_fraction: Split of ``data_path`` (default: as the first adapter was trained, else 0.1).
        split_seed: Seed of that split (default: as the first adapter was trained, else 42).
        style_data_dir: Folder of ``<politician>/*.jsonl`` for the style classifier (cached) and the prompts of its
            ``generic`` class (with either judge): a folder without them is refused.
        profiles_dir: Folder of ``<politician>.yaml`` profiles.
        generic_prompts: Training prompts the base answers without persona, to teach the classifier ``generic``.
        memorization_words: A generation that repeats this many words of a training completion counts as memorized.
        judge: Style judge: ``sotu`` learns the real voices of ``judge_presidents`` from their State of the Union
            addresses (needs the ``corpus`` extra), ``records`` learns from ``style_data_dir``; ``auto``: ``sotu``
            when the data was prepared with held-out documents, else ``records``. A politician that is not among
            ``judge_presidents`` is learned by ``sotu`` from its own prepared speech: the training documents' style
            records, scored on the held-out documents'.
        judge_presidents: The presidents the ``sotu`` judge tells apart (besides ``generic`` and such a politician).
        max_heldout: Most held-out records whose loss is computed: a seeded sample (recorded in metrics.json) beyond
            it, so a big held-out set can be traded for time knowingly; the interval widths are reported.
        stances: Stance statements of the profile to probe (by likelihood, no judge): ``heldout`` (those never in
            training data or pairs: the headline ``stance_agreement``), ``val`` (only those whose records are in the
            data's val.jsonl, ``prepare --stance_val_fraction``: ``stance_agreement_val``, read without the held-out
            statements, to choose a stage by), ``all`` (every statement: the val ones as ``stance_agreement_val``,
            the trained ones as ``stance_agreement_seen``) or ``none``.
        n_boot: Bootstrap resamples per interval.
        cache_arms: Reuse the base and prompt-only arms' answers and losses from an earlier evaluate with the same
            base model, held-out data, probes, decoding, batch sizes, library versions and package source (cached in
            $XDG_CACHE_HOME/politician_lm/arms, default ~/.cache; listed in metrics.json ``cached_arms``, their time
            left out of ``seconds``); false computes them afresh.
        pool_adapters: The adapters are fits of one recipe (e.g. its seeds): also report the recipe, each item's
            score averaged over them, with intervals over items, its difference to prompt-only and each fit's value
            (metrics.json ``recipe``).
        overwrite: Replace ``output_dir`` if it exists.
        allow_pickle: Accept pickle (.bin) weights, which can run code when loaded.
    """
    check_numbers(num_prompts=num_prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                  loss_batch_size=loss_batch_size, generic_prompts=generic_prompts, n_boot=n_boot,
                  memorization_words=memorization_words, max_heldout=max_heldout, val_fraction=val_fraction,
                  repetition_penalty=repetition_penalty)  # fmt: skip
    adapter_list, folders = adapter_folders(adapters, merged, allow_pickle)
    check_loadable(folders, base_model, allow_pickle)  # load_persona's checks of the base, before torch loads
    fits = [str(f.path) for f in folders[: len(adapter_list)]] if pool_adapters else None
    if fits:
        from politician_lm.evaluation.recipe import check_fits  # numpy and the metrics: not for --help

        check_fits(fits, [f.metadata.get("politician") for f in folders[: len(fits)]])
    curves = training_logs(logs)  # read now: a wrong file fails before any model loads
    data_path, trained = evaluated_data(folders[0], data_path)  # a preference stage's: its SFT data
    given = [data_path, style_data_dir, prompts_file, identity_probes, profiles_dir, base_model, *curves]
    out = check_output(output_dir, overwrite, inputs=[*given, *(f.path for f in folders)])  # --overwrite keeps them
    held = held_out(data_path, folders[0], trained, val_fraction, split_seed, max_heldout, seed)
    if held.split:  # every adapter must have held out the documents scored as held out
        check_held_apart(folders, held.split["heldout_documents"])
    held.check_stances(stances, data_path)
    politician = politician or folders[0].metadata.get("politician")
    if not politician:
        raise UserError("no target politician: pass --politician (the adapter's metadata names none)")
    judge_kind, presidents = choose_judge(judge, judge_presidents, held.split, politician, style_data_dir)
    own_voice = held.own_voice(politician) if judge_kind == "sotu" and politician not in presidents else None
    profile = load_profile(politician, profiles_dir)
    check_choice("--stances", stances, StanceSet)
    no_stances = stance_note(profile, politician, f"{profiles_dir}/{politician}.yaml", stances)
    style_items, identity_items = probe_items(prompts_file, held.rows, num_prompts, seed, identity_probes)
    check_arm_profiles(folders, politician, profiles_dir, stances, identity=bool(identity_items))
    # Generic class: the base without persona on training-side prompts of every politician (never the held-out ones).
    pool = generic_texts_pool(style_data_dir, generic_prompts, held.val_fraction, held.split_seed, seed)

    # Loaded only now: the metrics pull in scikit-learn and nltk, which a bad input or --help never needs.
    from politician_lm.commands._evaluate_steps import build_arms, model_build, run_arms
    from politician_lm.evaluation.arms import ArmContext, heldout_loss_rows
    from politician_lm.evaluation.card import scorecard_report, scorecard_text, short_namer
    from politician_lm.evaluation.judge import JudgeSpec
    from politician_lm.evaluation.report import write_scorecard
    from politician_lm.inference import load_persona

    persona = load_persona([str(f.path) for f in folders], base_model=base_model, allow_pickle=allow_pickle)
    arms = build_arms(persona, folders, persona.style.system_prompt or profile.get("system_prompt"))
    others = other_training_completions(folders, politician)  # another politician's adapter: its memorization
    ctx = ArmContext(politician, profile, profiles_dir, None, held.training_completions(), memorization_words,
                     len(style_items), stances, held.val_stances, held.trained_stances, others)  # fmt: skip
    runs = run_arms(
        persona,
        arms,
        [*style_items, *identity_items],
        [r["messages"] for r in held.loss_rows],
        pool,
        base_model or folders[0].base_model,
        JudgeSpec(
            judge_kind,
            style_data_dir,
            tuple(presidents),
            own_voice,
            tuple((held.split or {}).get("heldout_documents") or []),
            (held.val_fraction, held.split_seed),
        ),  # fmt: skip
        ctx,
        max_new_tokens,
        (batch_size, loss_batch_size),
        repetition_penalty,
        model_build(persona, folders[0].metadata) if cache_arms else None,
    )
    if runs.cached:
        print(f"reused from the cache (--cache_arms false recomputes): {', '.join(runs.cached)}", file=sys.stderr)
    n_style, n_identity = len(style_items), len(identity_items)
    report = scorecard_report(politician, runs, held, judge_kind, n_style, n_identity, n_boot, seed, fits)
    report |= {"decoding": {"greedy": True, "max_new_tokens": max_new_tokens, "repetition_penalty": repetition_penalty},
               "stance_note": no_stances, "prompts_file": prompts_file}  # fmt: skip
    with atomic_dir(out) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (tmp / "samples.jsonl").write_text(jsonl_text(runs.samples), encoding="utf-8")
        (tmp / "heldout_losses.jsonl").write_text(jsonl_text(heldout_loss_rows(runs.results, held.loss_rows)), "utf-8")
        write_scorecard(tmp, report, runs.samples, curves, short_namer(list(report["arms"])))
    print(scorecard_text(report))
    print(f"wrote {out}/metrics.json, report.html, samples.jsonl and heldout_losses.jsonl", file=sys.stderr)
    return out
