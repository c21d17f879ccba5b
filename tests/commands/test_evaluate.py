"""``politician-lm evaluate``: the scorecard of every arm with intervals and paired differences, its files and its
printed table, and bad inputs refused before the model loads. The real-speech path is test_evaluate_real_speech.py.
"""

import glob
import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from politician_lm.cli import main
from politician_lm.evaluation.arms import BASE, PROMPT_ONLY, Arm, differences
from politician_lm.evaluation.scorecard import ArmScores
from tests.helpers import ROOT


@pytest.fixture(scope="module")
def demo_fit(tmp_path_factory):
    """A short demo fit whose ``best`` and ``last`` adapters (and metrics.csv) evaluate scores."""
    root = tmp_path_factory.mktemp("demo-fit")
    args = ["fit", "--config", "configs/demo.yaml", "--trainer.max_epochs", "2", "--trainer.default_root_dir",
            str(root), "--trainer.enable_progress_bar", "false",
            "--data.cache_dir", str(root / "hf-cache")]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "politician_lm.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def test_differences_are_adapter_vs_prompt_only_later_vs_first_and_prompt_only_vs_base():
    def arm(loss: float) -> ArmScores:
        return ArmScores(target="biden", predicted=["biden", "generic"], loss_sum=[loss, loss], loss_tokens=[1.0, 1.0])

    results = {BASE: arm(3.0), PROMPT_ONLY: arm(2.5), "sft": arm(2.0), "dpo": arm(1.5)}
    diff = differences(results, n_boot=50, seed=0)
    assert list(diff) == ["sft - prompt-only", "dpo - prompt-only", "dpo - sft", "prompt-only - base"]
    assert diff["dpo - sft"]["heldout_loss"]["value"] == pytest.approx(-0.5)
    assert diff["prompt-only - base"]["heldout_loss"]["value"] == pytest.approx(-0.5)


def test_another_politicians_adapter_gets_no_identity_difference_and_no_real_speech_gap():
    """--adapters biden,trump on Biden's data: 'trump - prompt-only names_self' compared naming Trump with naming
    Biden, and 'trump - real speech' Trump's attribution with Biden's own speech judged Biden."""
    from politician_lm.evaluation.arms import ArmRuns
    from politician_lm.evaluation.card import real_speech_record

    def arm(target: str) -> ArmScores:
        return ArmScores(target=target, predicted=["biden", "trump"], names_self=[1.0, 0.0], claims_ai=[0.0, 0.0],
                         facts=[1.0, 1.0])  # fmt: skip

    results = {BASE: arm("biden"), PROMPT_ONLY: arm("biden"), "biden-sft": arm("biden"), "trump-sft": arm("trump")}
    diff = differences(results, n_boot=50, seed=0)
    assert "names_self" in diff["biden-sft - prompt-only"] and "names_self" not in diff["trump-sft - prompt-only"]
    assert "style_attribution" in diff["trump-sft - prompt-only"]  # judged on one target, prompt-only's on Trump's
    runs = ArmRuns(results, {}, [], None, 0, real_speech=["biden", "biden"])
    assert list(real_speech_record(runs, "biden", n_boot=50, seed=0)["differences"]) == ["biden-sft - real speech"]


def test_an_arm_puts_its_system_prompt_first_and_is_scored_against_its_own_politician():
    from politician_lm.data.templates import PromptStyle

    prompts = [[{"role": "user", "content": "hi"}]]
    style = PromptStyle(prompt_format="chat", system_prompt="You are Trump.", politician="trump")
    prompt_only = Arm(PROMPT_ONLY, None, PromptStyle(prompt_format="chat"), "You are Biden.")
    assert prompt_only.conversations(prompts)[0][0] == {"role": "system", "content": "You are Biden."}
    assert prompt_only.target("biden") == "biden" and prompt_only.persona_prompt == "You are Biden."
    other = Arm("runs/trump/adapters/best", "adapter_1", style)
    assert other.conversations(prompts) == prompts  # the adapter's own template supplies its system prompt
    assert other.target("biden") == "trump" and other.persona_prompt == "You are Trump."


def test_an_arm_asks_a_bare_probe_as_the_training_data_wrote_its_user_turns():
    from politician_lm.data.templates import PromptStyle

    bare = [[{"role": "user", "content": "Tell me a little about yourself."}]]
    written = [[{"role": "user", "content": "USER: Continue the speech: Folks,"}]]
    plain = Arm("a", "adapter_1", PromptStyle(prompt_format="plain"))
    assert plain.conversations(bare)[0][-1]["content"] == "USER: Tell me a little about yourself."
    assert plain.conversations(written) == written  # prepared records carry the label already
    chat = Arm("b", "adapter_1", PromptStyle(prompt_format="chat"))
    assert chat.conversations(bare) == bare  # the chat template marks the roles itself


@pytest.mark.slow
def test_evaluate_writes_the_scorecard_with_intervals_for_every_arm(demo_fit, tmp_path):
    root = demo_fit
    out = tmp_path / "eval"
    adapter, later = str(root / "adapters" / "best"), str(root / "adapters" / "last")
    log = glob.glob(str(root / "lightning_logs" / "version_*" / "metrics.csv"))[0]
    # No --data_path: the adapter records the data it was trained on. A second adapter (as SFT+DPO after SFT) is
    # also compared with the first.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "politician_lm.cli",
            "evaluate",
            "--adapters",
            f"{adapter},{later}",
            "--output_dir",
            str(out),
            "--logs",
            log,
            "--num_prompts",
            "12",
            "--max_new_tokens",
            "12",
            "--generic_prompts",
            "24",
            "--n_boot",
            "200",
            "--repetition_penalty",
            "1.3",
            "--pool_adapters",
            "true",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Evaluating" in proc.stderr  # the progress bar
    assert "Persona scorecard: biden" in proc.stdout and "prompt-only" in proc.stdout  # the numbers are printed
    report = json.loads((out / "metrics.json").read_text())
    assert list(report["arms"]) == ["base", "prompt-only", adapter, later]
    assert (
        report["classifier"]["labels"] == ["biden", "generic", "trump"] and report["classifier"]["generic_texts"] == 24
    )
    assert report["n_style_prompts"] == 12 and report["n_identity_prompts"] == 16
    assert report["decoding"] == {"greedy": True, "max_new_tokens": 12, "repetition_penalty": 1.3}
    assert report["bootstrap"] == {"interval": "percentile, 95%", "n_boot": 200, "seed": 0, "paired": True}
    assert "greedy with repetition penalty 1.3" in proc.stdout
    for arm in report["arms"].values():
        assert {
            "style_attribution",
            "names_self",
            "claims_ai",
            "facts",
            "identity_score",
            "prompt_echo",
            "memorization",
            "heldout_loss",
            "distinct_2",
            "stance_agreement",
        } <= set(arm)
        assert "stance_agreement_seen" not in arm  # --stances heldout (the default) probes held-out statements only
        for e in arm.values():
            assert e["low"] <= e["value"] <= e["high"]
    assert set(report["differences"]) == {
        f"{adapter} - prompt-only",
        f"{later} - prompt-only",
        f"{later} - {adapter}",
        "prompt-only - base",
    }
    assert "stance_agreement" in report["differences"][f"{adapter} - prompt-only"]
    assert set(report["stances"]["sides"][adapter].values()) <= {"support", "oppose"}
    assert f"{root.name}/last - {root.name}/best" in proc.stdout  # the table's short names
    assert set(report["corpus_distinct"][later]) == {"distinct_1", "distinct_2"}
    assert sum(report["confusion"][adapter].values()) == 12
    # the real speech: each style prompt's own held-out continuation, cut to the answers' length, judged alike
    real = report["real_speech"]["style_attribution"]
    assert real["n"] == 12 and real["value"] * 12 == report["confusion"]["real speech"]["biden"]
    assert sum(report["confusion"]["real speech"].values()) == 12 and "real speech: the held-out" in proc.stdout
    # each adapter's paired difference to it, on the same 12 prompts
    assert set(report["real_speech"]["differences"]) == {f"{adapter} - real speech", f"{later} - real speech"}
    gap = report["real_speech"]["differences"][f"{adapter} - real speech"]
    own = report["arms"][adapter]["style_attribution"]["value"]
    assert gap["n"] == 12 and abs(gap["value"] - (own - real["value"])) < 1e-9 and gap["low"] <= gap["value"]
    assert f"style_attribution, {root.name}/best - real speech:" in proc.stdout
    # the two adapters pooled as fits of one recipe: per item the mean, so the mean of the two fits' values
    recipe = report["recipe"]
    assert recipe["adapters"] == [adapter, later]
    for key in ("style_attribution", "names_self", "heldout_loss", "stance_agreement"):
        fits = [report["arms"][arm][key]["value"] for arm in (adapter, later)]
        assert recipe["fits"][key] == [round(v, 4) for v in fits]
        assert recipe["mean"][key]["value"] == pytest.approx(sum(fits) / 2, abs=1e-9)
        assert recipe["mean"][key]["low"] <= recipe["mean"][key]["value"] <= recipe["mean"][key]["high"]
    gap = recipe["mean - prompt-only"]["style_attribution"]["value"]
    assert "recipe: the mean per item of 2 fits" in proc.stdout
    base_style = report["arms"]["prompt-only"]["style_attribution"]["value"]
    assert gap == pytest.approx(recipe["mean"]["style_attribution"]["value"] - base_style, abs=1e-9)
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "Differences (paired bootstrap)" in page
    assert "greedy decoding with repetition penalty 1.3" in page and "best - real speech:" in page
    assert "Recipe: the mean per item of 2 fits" in page and "<td>mean - prompt-only</td>" in page
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 * (12 + 16) + 12  # four arms, and the real continuations as the judge read them
    real = [s for s in samples if s["arm"] == "real speech"]
    assert len(real) == 12 and all(s["generation"] and s["predicted"] for s in real)
    # their labels are what the "real speech" row counts, and the texts are the references cut to the answers' length
    assert Counter(s["predicted"] for s in real) == Counter(
        {k: v for k, v in report["confusion"]["real speech"].items() if v}
    )
    assert all(len(s["generation"]) <= len(s["reference"]) for s in real)
    # item by item: each identity answer's flags average to the arm's identity metrics
    for arm in report["arms"]:
        answers = [s for s in samples if s["arm"] == arm][12:]  # after the 12 style prompts, the 16 identity probes
        assert len(answers) == 16 and all(isinstance(s["memorized"], bool) for s in answers)
        for key in ("names_self", "claims_ai", "facts"):
            assert sum(s[key] for s in answers) / 16 == pytest.approx(report["arms"][arm][key]["value"], abs=1e-9)
    # and each held-out record's summed NLL and tokens per arm give the arm's per-token held-out loss
    losses = [json.loads(line) for line in (out / "heldout_losses.jsonl").read_text().splitlines()]
    assert len(losses) == report["arms"][adapter]["heldout_loss"]["n"] and losses[0]["completion"]
    for arm in report["arms"]:
        nll, tokens = (sum(r["arms"][arm][k] for r in losses) for k in ("nll", "tokens"))
        assert nll / tokens == pytest.approx(report["arms"][arm]["heldout_loss"]["value"], rel=1e-6)
    # A second run with the same base reuses the cached generic texts.
    assert list((tmp_path / "xdg" / "politician_lm" / "generic").glob("*.json"))


def test_evaluate_refuses_bad_inputs_before_loading(tmp_path, capsys, chdir_root):
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "evaluate",
                "--adapters",
                str(tmp_path / "nope"),
                "--data_path",
                "data/biden",
                "--output_dir",
                str(tmp_path / "o"),
            ]
        )
    assert exc.value.code == 2 and "adapter folder does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _stance_run(root, out, profiles_dir, tmp_path):
    """A small evaluate of the demo's best adapter that probes every stance statement (held out and seen)."""
    args = ["evaluate", "--adapters", str(root / "adapters" / "best"), "--output_dir", str(out),
            "--profiles_dir", str(profiles_dir), "--stances", "all", "--num_prompts", "2", "--max_new_tokens", "4",
            "--generic_prompts", "4", "--max_heldout", "8", "--identity_probes", str(tmp_path / "none.jsonl"),
            "--n_boot", "100"]  # fmt: skip
    (tmp_path / "none.jsonl").write_text('{"prompt": "Who are you?", "kind": "identity"}\n')
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    proc = subprocess.run([sys.executable, "-m", "politician_lm.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_the_stance_metric_can_fail_a_profile_with_every_position_flipped_scores_one_minus(demo_fit, tmp_path):
    """Scored against a profile whose every documented position is flipped, each arm's stance agreement is
    1 - its agreement with the real profile: the metric reads the model's side, not the profile's."""
    import shutil

    import yaml

    flipped = tmp_path / "flipped"
    shutil.copytree(ROOT / "data" / "profiles", flipped)
    profile = yaml.safe_load((flipped / "biden.yaml").read_text())
    for entry in profile["stances"]:
        entry["position"] = {"support": "oppose", "oppose": "support"}[entry["position"]]
    (flipped / "biden.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    real = _stance_run(demo_fit, tmp_path / "real", ROOT / "data" / "profiles", tmp_path)
    other = _stance_run(demo_fit, tmp_path / "other", flipped, tmp_path)
    for arm, metrics in real["arms"].items():
        key = "stance_agreement"
        assert other["arms"][arm][key]["value"] == pytest.approx(1 - metrics[key]["value"])
        assert other["arms"][arm][key]["n"] == metrics[key]["n"] > 0
        assert "stance_agreement_seen" not in metrics  # the demo's data trains no statement: none is "seen"
        assert real["stances"]["sides"][arm] == other["stances"]["sides"][arm]  # the model took the same sides


def test_real_speech_is_cut_to_the_answers_length_in_tokens(tiny_path):
    from transformers import AutoTokenizer

    from politician_lm.commands._evaluate_steps import first_tokens

    tok = AutoTokenizer.from_pretrained(tiny_path)
    texts = ["Folks, let me tell you something about this country of ours and what it can do.", "Short."]
    cut = first_tokens(tok, texts, 6)
    assert len(tok(cut[0], add_special_tokens=False)["input_ids"]) == 6 and texts[0].startswith(cut[0])
    assert cut[1] == "Short."


@pytest.mark.slow  # the demo fit it needs takes seconds
@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--repetition_penalty", "0", "--repetition_penalty must be above 0"),
        ("--pool_adapters", "true", "--pool_adapters needs at least 2 adapters"),
    ],
)
def test_bad_settings_are_refused_before_loading(demo_fit, tmp_path, capsys, chdir_root, flag, value, message):
    adapter = str(demo_fit / "adapters" / "best")
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--adapters", adapter, "--output_dir", str(tmp_path / "o"), flag, value])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_the_generic_class_is_generated_and_cached_with_the_repetition_penalty(tmp_path, monkeypatch):
    from politician_lm.data.templates import PromptStyle
    from politician_lm.evaluation.generic import generic_texts

    class Recorder:  # what generic_texts needs of a Persona: its style and generate
        style = PromptStyle(prompt_format="chat")

        def __init__(self):
            self.calls = []

        def generate(self, conversations, streamer=None, batch_size=None, on_batch=None, **settings):
            self.calls.append(settings)
            return [f"answer {len(self.calls)}" for _ in conversations]

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    persona, prompts = Recorder(), [[{"role": "user", "content": "Jobs?"}]]
    plain = generic_texts(persona, prompts, 8, 4, str(tmp_path))
    penalized = generic_texts(persona, prompts, 8, 4, str(tmp_path), repetition_penalty=1.2)
    assert [c["repetition_penalty"] for c in persona.calls] == [1.0, 1.2] and plain != penalized
    assert generic_texts(persona, prompts, 8, 4, str(tmp_path), repetition_penalty=1.2) == penalized  # cached
    assert len(persona.calls) == 2
    nf4, full = ({"quantization": q, "dtype": "torch.float32"} for q in ("nf4", "none"))
    assert generic_texts(persona, prompts, 8, 4, str(tmp_path), build=nf4) == ["answer 3"]  # another load: computed
    assert generic_texts(persona, prompts, 8, 4, str(tmp_path), build=full) == ["answer 4"]
    assert generic_texts(persona, prompts, 8, 4, str(tmp_path), build=nf4) == ["answer 3"]  # cached by its load
    assert generic_texts(persona, prompts, 8, 4, str(tmp_path), build=nf4, use_cache=False) == ["answer 5"]


@pytest.mark.slow
def test_a_second_evaluate_reuses_the_arms_no_adapter_changes_and_gets_the_same_numbers(
    demo_fit, tmp_path, monkeypatch, chdir_root
):
    """The base and prompt-only arms are cached across runs (evaluation.arm_cache): a second run reads them instead
    of computing them (a tampered cache shows in its answers), with the same metrics as computing them; another
    batch size or --cache_arms false computes them afresh."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    (tmp_path / "who.jsonl").write_text('{"prompt": "Who are you?", "kind": "identity"}\n')

    def run(name: str, *extra: str) -> tuple[dict, list[dict]]:
        out = tmp_path / name
        main(["evaluate", "--adapters", str(demo_fit / "adapters" / "best"), "--output_dir", str(out),
              "--num_prompts", "3", "--max_new_tokens", "4", "--generic_prompts", "4", "--max_heldout", "6",
              "--identity_probes", str(tmp_path / "who.jsonl"), "--n_boot", "50", *extra])  # fmt: skip
        samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
        return json.loads((out / "metrics.json").read_text()), samples

    first, first_samples = run("first")
    assert first["cached_arms"] == []
    again, again_samples = run("again")
    assert again["cached_arms"] == ["base", "prompt-only"]
    assert again["arms"] == first["arms"] and again["differences"] == first["differences"]
    assert again["stances"] == first["stances"] and again_samples == first_samples

    cached = list((tmp_path / "xdg" / "politician_lm" / "arms").glob("*.json"))
    assert len(cached) == 2
    for path in cached:
        payload = json.loads(path.read_text())
        path.write_text(json.dumps({**payload, "texts": ["TAMPERED"] * len(payload["texts"])}))
    _, read = run("read")
    assert {s["generation"] for s in read if s["arm"] in ("base", "prompt-only")} == {"TAMPERED"}
    fresh, fresh_samples = run("fresh", "--cache_arms", "false")
    assert fresh["cached_arms"] == [] and fresh["arms"] == first["arms"] and fresh_samples == first_samples
    other, _ = run("other", "--batch_size", "2")  # another batching: another key
    assert other["cached_arms"] == []
