"""`politician-lm prepare`: transcripts, interviews, tables and identity templates -> train/val JSONL + stats."""

import json
import math
import re
import shutil
import string

import pytest

from politician_lm.artifacts.profiles import load_profile
from politician_lm.commands.prepare import prepare
from politician_lm.data.prepare.build import CONTINUE
from politician_lm.data.prepare.clean import clean_post, split_sentences, strip_markdown, strip_stage_directions
from politician_lm.data.prepare.files import TEXT_SUFFIXES, expand
from politician_lm.data.prepare.identity import IDENTITY_FIELDS, load_identity_template, profile_values
from politician_lm.data.prepare.transcripts import read_interview, read_speech
from politician_lm.data.records import split_bucket, to_conversation
from politician_lm.errors import UserError
from politician_lm.evaluation.metrics import claims_ai
from tests.helpers import ROOT

FIX = ROOT / "tests" / "fixtures" / "prepare"
TEMPLATE = ROOT / "data" / "identity_training_template.json"
PROFILES = ROOT / "data" / "profiles"
STAGE = re.compile(r"applause|laughter|inaudible|cheers|\(|\)|\[|\]", re.I)
OTHER_SPEAKERS = [
    "Thank you, Mr. President",
    "How will you pay",
    "operators say",
    "Mr. President --",
    "six months away",
    "follow-up on timing",
    "harvest season?",
    "THE PRESIDENT",
    "MR. SMITH",
    "MS. JONES",
]


def run(tmp_path, name="out", **kw):
    kw.setdefault("tokenizer", str(ROOT / "checkpoints" / "tiny-politician"))
    kw.setdefault("identity_template", str(TEMPLATE))
    out = prepare(str(tmp_path / name), **kw)
    rows = {
        s: [json.loads(x) for x in (out / f"{s}.jsonl").read_text(encoding="utf-8").splitlines()]
        for s in ("train", "val")
    }
    assert not (out / "test.jsonl").exists()  # no document held out: no test file
    return out, rows, json.loads((out / "stats.json").read_text(encoding="utf-8"))


def completion(r):
    return r["completion"] if "completion" in r else r["messages"][-1]["content"]


def body(r):
    return completion(r).removeprefix("POLITICIAN: ")


def prompt_text(r):
    return r["prompt"] if "prompt" in r else "\n".join(m["content"] for m in r["messages"][:-1])


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """Every kind of source at once, multi-turn on."""
    return run(
        tmp_path_factory.mktemp("full"),
        transcripts=[str(FIX / "harbor_speech.md")],
        interviews=[str(FIX / "press_briefing.txt")],
        speaker="the president",
        table=[str(FIX / "posts.csv"), str(FIX / "quotes.jsonl")],
        identity_profile=str(PROFILES / "biden.yaml"),
        multi_turn=True,
        val_fraction=0.2,
    )


def every(rows):
    return rows["train"] + rows["val"]


# -- interviews -------------------------------------------------------------------------------------------------
def test_interview_pairs_questions_with_answers_and_never_leaks_other_speakers(full):
    _, rows, _ = full
    recs = [r for r in every(rows) if r["source"] == "press_briefing.txt"]
    pairs = {(r["prompt"], r["completion"]) for r in recs if r["kind"] == "policy" and "prompt" in r}
    assert pairs == {
        (
            "USER: Thank you, Mr. President. How will you pay for the repairs without raising the fees that barge "
            "operators already complain about?",
            "POLITICIAN: Fair question. The money comes from the fund Congress already set aside for inland waterways, "
            "so nobody's fee goes up this year. Now, I won't pretend the fund stays full forever. We are going to sit "
            "down with the operators in the spring and look at the fee schedule together, line by line.",
        ),
        (
            "USER: Sir, the operators say they were not consulted on the first plan at all.",
            "POLITICIAN: They were not, and that was a mistake. I told my team that nobody signs anything about the "
            "river without the people who work the river in the room.",
        ),
        ("USER: Mr. President --", "POLITICIAN: Let me finish this one thought, please --"),
        (
            "USER: But the spring is six months away --",
            "POLITICIAN: -- because it matters. The people on those boats know more about the river than anybody in "
            "this building. I intend to listen to them.",
        ),
        (
            "USER: A follow-up on timing. Will any lock close during the harvest season?",
            "POLITICIAN: No lock closes during harvest. That is a promise I made to the farmers in Paducah last month, "
            "and I am keeping it.",
        ),
    }
    for r in recs:
        assert not STAGE.search(completion(r)), completion(r)
        assert not [s for s in OTHER_SPEAKERS if s in completion(r)], completion(r)
        assert "2:14" not in prompt_text(r) and "WHITE HOUSE" not in prompt_text(r)
    # Opening remarks (no question before them) are speech continuations; the header is never used.
    opening = [r for r in recs if r["kind"] == "style"]
    assert [(r["prompt"], r["turn"]) for r in opening] == [(CONTINUE + "Good afternoon, everybody.", 1)]
    assert opening[0]["completion"].startswith("POLITICIAN: Please, sit down. Before I take your questions")
    assert opening[0]["completion"].endswith("I'll take a few questions. Maria.")


def test_multi_turn_records_carry_up_to_three_earlier_exchanges(full):
    _, rows, _ = full
    singles = {(r["source"], r["turn"]): r for r in every(rows) if r["kind"] == "policy" and "prompt" in r}
    chats = [r for r in every(rows) if r["kind"] == "policy" and "messages" in r]
    assert len(chats) == 4  # every answer but the first has earlier exchanges
    for r in chats:
        msgs = r["messages"]
        assert [m["role"] for m in msgs] == ["user", "assistant"] * (len(msgs) // 2)
        assert 2 <= len(msgs) // 2 <= 4 and r["context_exchanges"] == len(msgs) // 2 - 1
        twin = singles[(r["source"], r["turn"])]
        assert msgs[-2:] == to_conversation(twin)["messages"]
        assert all(m["content"].startswith("POLITICIAN: ") for m in msgs[1::2])
    assert max(r["context_exchanges"] for r in chats) == 3


def test_answers_longer_than_the_budget_continue_as_style_examples(tmp_path):
    _, rows, _ = run(
        tmp_path,
        interviews=[str(FIX / "press_briefing.txt")],
        speaker="THE PRESIDENT, PRESIDENT SMITH",
        max_completion_tokens=40,
        min_completion_words=1,
        val_fraction=0.5,
        seed=3,
    )
    answer = (
        "Fair question. The money comes from the fund Congress already set aside for inland waterways, so nobody's "
        "fee goes up this year. Now, I won't pretend the fund stays full forever. We are going to sit down with the "
        "operators in the spring and look at the fee schedule together, line by line."
    )
    recs = sorted((r for r in every(rows) if r["turn"] == 3), key=lambda r: answer.index(body(r)))
    assert [r["kind"] for r in recs] == ["policy", "style", "style", "style"]
    assert recs[0]["completion"] == "POLITICIAN: Fair question."  # the next sentence would pass 40 tokens
    assert " ".join(body(r) for r in recs) == answer
    for r in recs[1:]:
        assert r["prompt"].startswith(CONTINUE) and f"{r['prompt'].removeprefix(CONTINUE)} {body(r)}" in answer


# -- speeches ---------------------------------------------------------------------------------------------------
def test_speech_is_cleaned_and_cut_into_consecutive_whole_sentence_passages(tmp_path, tokenizer):
    _, rows, _ = run(
        tmp_path,
        transcripts=[str(FIX / "harbor_speech.md")],
        max_completion_tokens=60,
        min_completion_words=1,
        val_fraction=0.5,
        seed=1,
    )
    full_text = " ".join(s for p in read_speech(FIX / "harbor_speech.md", set()) for s in split_sentences(p.text))
    recs = sorted(every(rows), key=lambda r: full_text.index(body(r)))
    speech = " ".join(body(r) for r in recs)
    for text in (speech, *[r["prompt"] for r in recs]):
        assert not STAGE.search(text) and not re.search(r"[#*_]|Union Hall|The work ahead", text), text
    assert "called in sick except the day" in speech and "That means two thousand jobs" in speech
    assert recs[0]["prompt"] == CONTINUE + "Thank you."  # the first sentence is context only
    assert speech.startswith("Thank you all. Please, have a seat. It is good to be back")
    assert speech.endswith("God bless the people who keep this harbor running.")
    for r in recs:
        assert len(tokenizer(r["completion"], add_special_tokens=False)["input_ids"]) <= 60
        assert re.search(r"[.!?\"]$", r["completion"])  # whole sentences only
        context = r["prompt"].removeprefix(CONTINUE)
        assert 1 <= len(split_sentences(context)) <= 2
        assert f"{context} {body(r)}" in full_text  # the context comes right before the passage


def test_labelled_speech_keeps_only_the_politician(tmp_path):
    (tmp_path / "rally.txt").write_text(
        "THE PRESIDENT:  Thank you.  It is wonderful to be in Ohio tonight, it really is.\n\n"
        "AUDIENCE MEMBER:  We love you, please do not ever leave us!\n\n"
        "THE PRESIDENT:  I love you back.  Now let me tell you about the new bridge we are building here.\n",
        "utf-8",
    )
    paragraphs = read_speech(tmp_path / "rally.txt", set())
    text = " ".join(p.text for p in paragraphs)
    assert "We love you" not in text and "AUDIENCE" not in text and "THE PRESIDENT" not in text
    assert text.startswith("Thank you. It is wonderful") and text.endswith("we are building here.")


def test_interview_label_variants(tmp_path):
    (tmp_path / "talk.md").write_text(
        "# Interview with the Governor\n\n**Q:** What will you do about the bus routes in the valley?\n\n"
        "**GOVERNOR LEE:** We will restore the night routes first. *Then* the weekend ones.\n\n"
        "Q. And the fares?\n\nGovernor Lee said later: nothing.\n\n"
        "REP. O'NEIL: Fares stay frozen, as far as I know.\n\n"
        "GOVERNOR LEE: Fares stay where they are for two full years, I promise you that.\n",
        "utf-8",
    )
    turns = read_interview(tmp_path / "talk.md", {"GOVERNOR LEE"})
    assert [t.label for t in turns] == ["Q", "GOVERNOR LEE", "Q", "REP. O'NEIL", "GOVERNOR LEE"]
    assert turns[2].text == "And the fares? Governor Lee said later: nothing."  # a mixed-case name is not a label
    _, rows, _ = run(
        tmp_path, interviews=[str(tmp_path / "talk.md")], speaker="governor lee.", val_fraction=0.5, seed=3
    )
    assert sorted((r["prompt"], r["completion"]) for r in every(rows)) == [
        (  # the reporter's question, not the representative's remark after it
            "USER: And the fares? Governor Lee said later: nothing.",
            "POLITICIAN: Fares stay where they are for two full years, I promise you that.",
        ),
        (
            "USER: What will you do about the bus routes in the valley?",
            "POLITICIAN: We will restore the night routes first. Then the weekend ones.",
        ),
    ]


def test_transcription_service_interview_pairs_questions_with_the_named_speakers_answers(tmp_path):
    (tmp_path / "town-hall.txt").write_text(
        "Town hall, Scranton\n\nModerator (00:00:02):\nWhat will you do about the bus routes in the valley?\n\n"
        "Joe Biden (00:00:09):\nWe will restore the night routes first. [crosstalk 00:00:12] Then the weekend ones."
        "\n\nAudience (00:00:20):\nFour more years!\n\nModerator (00:00:25):\nAnd the fares?\n\n"
        "Joe Biden (00:00:27):\nFares stay where they are for two full years, I promise you that.\n",
        "utf-8",
    )
    turns = read_interview(tmp_path / "town-hall.txt", {"JOE BIDEN"})
    assert [t.label for t in turns] == ["MODERATOR", "JOE BIDEN", "AUDIENCE", "MODERATOR", "JOE BIDEN"]
    _, rows, _ = run(
        tmp_path, interviews=[str(tmp_path / "town-hall.txt")], speaker="Joe Biden", val_fraction=0.5, seed=2
    )
    assert sorted((r["prompt"], r["completion"]) for r in every(rows)) == [
        ("USER: And the fares?", "POLITICIAN: Fares stay where they are for two full years, I promise you that."),
        (
            "USER: What will you do about the bus routes in the valley?",
            "POLITICIAN: We will restore the night routes first. Then the weekend ones.",
        ),
    ]


@pytest.mark.parametrize(
    "raw,clean",
    [
        ("Thank you. (Applause.) Thanks.", "Thank you. Thanks."),
        (
            "We won (APPLAUSE) again [applause] and [Laughter] again (inaudible) today (Cross-talk.)",
            "We won again and again today",
        ),
        ("Folks (and I mean this) listen. (The President exits.)", "Folks (and I mean this) listen."),
        ("**Bold** and _soft_ and [a link](http://x.org) here", "Bold and soft and a link here"),
        (
            "But the dock—[applause]. The dock stays. Now—(Laughter.)—now then.",
            "But the dock— The dock stays. Now— now then.",
        ),
        ("We said so [so; White House correction] and left—[applause].", "We said so and left—"),
    ],
)
def test_cleaning_rules(raw, clean):
    assert strip_stage_directions(strip_markdown(raw)) == clean


def test_post_cleaning():
    assert (
        clean_post("Go see https://t.co/x1 and www.site.org now @Some_Body! #BuildBackBetter #MAGA &amp; more")
        == "Go see and now @user! Build Back Better MAGA & more"
    )


@pytest.mark.parametrize(
    "raw,clean",
    [
        ("@joe_smith @mary99 Thank you both, see you in Ohio next week!", "Thank you both, see you in Ohio next week!"),
        (".@CNN is reporting fake news again tonight.", "@user is reporting fake news again tonight."),
        ("1/3 Today I signed an order.", "Today I signed an order."),
        ("(2/3) The order cuts red tape. 🧵", "The order cuts red tape."),
        ("Great rally tonight, patriots! 🇺🇸🇺🇸 #MAGA #KAG", "Great rally tonight, patriots! 🇺🇸🇺🇸"),
        ("We will #BuildBackBetter", "We will Build Back Better"),
        ("we are #1 in jobs and #1 in growth!", "we are #1 in jobs and #1 in growth!"),
        ("stay tuned everyone (https://t.co/xYz)", "stay tuned everyone"),
        ("Watch my speech “https://t.co/abc” and share it.", "Watch my speech and share it."),
        ("My statement: bit.ly/3xYzAbC", "My statement:"),
        ('<p>Thank you <a href="https://x.social/@Fr" class="mention">@<span>Fr</span></a> in Iowa!</p><p>Next.</p>',
         "Thank you @user in Iowa! Next."),
        ("Line one<br>line two &amp; three", "Line one line two & three"),
        ("Go #StopMcConnell, #DeSantis fans of the #iPhone", "Go Stop McConnell, DeSantis fans of the iPhone"),
        ("It\u00e2\u0080\u0099s a great caf\u00c3\u00a9, friends!", "It’s a great café, friends!"),  # Facebook's export
        ("We\u200b will\x07 win\u00ad again.", "We will win again."),  # zero-width, control, soft hyphen
    ],
)  # fmt: skip
def test_post_cleaning_cases(raw, clean):
    assert clean_post(raw) == clean


def test_reposts_truncated_and_deleted_posts_are_dropped_and_counted(tmp_path):
    from collections import Counter

    from politician_lm.data.prepare.tables import examples_from_table

    rows = [
        {"full_text": "Our team did a fantastic job today at the summit in Asia.", "is_retweet": "true"},
        {"full_text": "A retweet whose text has no prefix in this export.", "retweeted_status": {"id": 10}},
        {"full_text": "rt @governor: Proud to stand with the president on energy today."},
        {"full_text": "MT @senator: The bill creates millions of good jobs nationwide."},
        {"full_text": '"@fan123: You are the best president in history, keep it up!"'},
        {"full_text": "We passed the bill and we will not stop until… https://t.co/TrUnC8tEd"},
        {"full_text": None},
        {"full_text": "This one is the politician's own post about the harbor.", "is_retweet": "false"},
    ]
    path = tmp_path / "posts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dropped: Counter = Counter()
    kept = examples_from_table(path, "full_text", "Say something.", [], False, dropped)
    assert [e.text for e in kept] == ["", "This one is the politician's own post about the harbor."]  # "" is too short
    assert (dropped["retweet"], dropped["truncated"]) == (5, 1)


def test_sentence_split_keeps_titles_and_initials():
    assert split_sentences('Mr. Smith went to the U.S. Senate. He said "No." Then 3 people left! Did they?') == [
        "Mr. Smith went to the U.S. Senate.",
        'He said "No."',
        "Then 3 people left!",
        "Did they?",
    ]
    assert split_sentences("Dr. Ruiz lives on St. Paul Street. Rule No. 5 holds in the U.S. Navy. No. We won't.") == [
        "Dr. Ruiz lives on St. Paul Street.",
        "Rule No. 5 holds in the U.S. Navy.",
        "No.",
        "We won't.",
    ]
    # a title inside a quote, and a list's numbers, end no sentence; a number that ends one still does
    assert split_sentences(
        'She said: "Mr. President, I work two jobs." Three things. 1. Roads. 2. Schools. We had 12. Go.'
    ) == [
        'She said: "Mr. President, I work two jobs."',
        "Three things.",
        "1. Roads.",
        "2. Schools.",
        "We had 12.",
        "Go.",
    ]


# -- tables -----------------------------------------------------------------------------------------------------
def test_tables_are_cleaned_and_prompted_from_the_row(full):
    _, rows, stats = full
    posts = {r["line"]: r for r in every(rows) if r["source"] == "posts.csv"}
    assert set(posts) == {2, 3, 5, 9}  # 4 retweet, 5 near and 6 exact duplicates, 7 too short
    assert posts[2] == {
        "prompt": "USER: Say something about bridges.",
        "kind": "style",
        "topic": "bridges",
        "completion": "POLITICIAN: The Riverside bridge reopens today! Thank you @user for finishing early "
        "Infrastructure Week",
        "source": "posts.csv",
        "line": 2,
    }
    assert posts[3]["prompt"] == "USER: Say something about anything." and "topic" not in posts[3]
    assert posts[9]["completion"] == "POLITICIAN: Teachers & parents agree: smaller classes work. Let's fund them."
    assert stats["dropped"]["retweet"] == 1
    quotes = [r for r in every(rows) if r["source"] == "quotes.jsonl"]
    assert sorted(r["line"] for r in quotes) == [1, 2, 4]


def test_table_prompt_can_use_any_column_and_kind(tmp_path):
    _, rows, _ = run(
        tmp_path,
        table=[str(FIX / "quotes.jsonl")],
        table_prompt="What did you say at the {venue} about {topic}?",
        table_kind="policy",
        val_fraction=0.5,
        seed=0,
    )
    prompts = sorted(r["prompt"] for r in every(rows))
    assert prompts[0] == "USER: What did you say at the graduation about schools?"
    assert {r["kind"] for r in every(rows)} == {"policy"}


# -- identity ---------------------------------------------------------------------------------------------------
ANSWER_NEEDS = {  # topic -> placeholders of which every answer must use at least one
    "name": {"name", "first_name"},
    "who": {"name"},
    "ai": {"name"},
    "party": {"party"},
    "offices": {"offices_list", "first_office", "latest_office"},
    "education": {"education_list"},
    "family": {"spouse", "spouse_name", "children_list"},
    "hometown": {"birthplace", "birth_date", "born"},
    "job": {"title", "latest_office"},
    "phrase": {"signature_phrase"},
}


def fields(text):
    return {f for _, f, _, _ in string.Formatter().parse(text) if f}


def test_identity_template_answers_answer_their_own_questions():
    entries = load_identity_template(TEMPLATE)
    singles, multis = [e for e in entries if len(e.turns) == 1], [e for e in entries if len(e.turns) > 1]
    assert len(singles) >= 20 and len(multis) >= 3
    assert set(ANSWER_NEEDS) <= {e.topic for e in singles}
    for e in entries:
        for q, a in e.turns:
            topic = e.topic if len(e.turns) == 1 else next(t for t, need in ANSWER_NEEDS.items() if fields(a) & need)
            assert q.endswith("?") or q.endswith("."), q
            assert fields(a) & ANSWER_NEEDS[topic], (q, a)
            if "party" in q.lower() or "democrat" in q.lower():
                assert "party" in fields(a), (q, a)
            if re.search(r"\b(AI|bot|language model|computer|assistant)\b", q):
                assert "name" in fields(a) and re.match(r"(No|Not)\b", a), (q, a)


@pytest.mark.parametrize("politician,party", [("biden", "Democratic"), ("trump", "Republican")])
def test_identity_answers_filled_from_the_profile(politician, party):
    values = profile_values(load_profile(politician, PROFILES))
    assert set(values) == set(IDENTITY_FIELDS)
    for e in load_identity_template(TEMPLATE):
        for q, a in e.turns:
            q, a = q.format_map(values), a.format_map(values)
            assert "{" not in q + a and not claims_ai(a), a
            if e.topic == "party" or "party" in q.lower():
                assert party in a
            if re.search(r"\b(AI|bot|language model|computer)\b", q):
                assert values["name"] in a


def test_identity_records(full, tmp_path):
    _, rows, _ = full
    recs = [r for r in every(rows) if r["kind"] == "identity"]
    n_single = sum(len(e.turns) == 1 for e in load_identity_template(TEMPLATE))
    assert sum("prompt" in r for r in recs) == n_single and sum("messages" in r for r in recs) >= 3
    by_q = {r["prompt"]: r["completion"] for r in recs if "prompt" in r}
    assert (
        by_q["USER: Which political party do you belong to?"]
        == "POLITICIAN: I'm a proud member of the Democratic Party."
    )
    assert "Joe Biden" in by_q["USER: Are you an AI?"] and not claims_ai(by_q["USER: Are you an AI?"])
    # A profile without family facts skips the entries that need them instead of writing "{spouse}".
    (tmp_path / "newcomer.yaml").write_text("name: Pat Example\nparty: Independent\ntitle: Mayor of Springfield\n")
    _, rows, stats = run(tmp_path, identity_profile=str(tmp_path / "newcomer.yaml"), val_fraction=0.3)
    assert stats["dropped"]["missing_profile_field"] > 0 and all("{" not in completion(r) for r in every(rows))


# -- hygiene and split ------------------------------------------------------------------------------------------
BASE = (
    "the harbor channel has to be dredged this year so that the big grain ships can dock at low tide and "
    "the workers on the night shift keep their jobs"
)


def write_csv(path, texts):
    path.write_text("text\n" + "".join(f'"{t}"\n' for t in texts), encoding="utf-8")
    return str(path)


def test_exact_and_near_duplicates_are_dropped_and_clusters_share_a_side(tmp_path):
    distinct = [
        f"Statement number {i} is about a completely different subject, {w} matters most."
        for i, w in enumerate(
            ["rail", "schools", "housing", "water", "roads", "farms", "nurses", "veterans", "ports", "parks"]
        )
    ]
    near = BASE.replace("this year", "this summer")  # word 3-gram Jaccard 0.81 with BASE
    related = " ".join(BASE.split()[:22]) + " and we will pay for it"  # 0.59: kept, but in BASE's cluster
    texts = [BASE, BASE.upper() + "!!", near, related, *distinct]
    csv = write_csv(tmp_path / "t.csv", texts)
    sides = set()
    for seed in range(12):
        _, rows, stats = run(tmp_path, f"o{seed}", table=[csv], val_fraction=0.3, seed=seed)
        assert stats["dropped"]["exact_duplicate"] == 1 and stats["dropped"]["near_duplicate"] == 1
        assert stats["records"]["total"] == len(texts) - 2 and stats["clusters"] == len(texts) - 3
        side = {s for s in ("train", "val") for r in rows[s] if r["line"] in (2, 5)}  # BASE and `related`
        assert len(side) == 1
        sides |= side
    assert sides == {"train", "val"}  # the cluster moves with the seed, as a whole
    _, rows, stats = run(tmp_path, "loose", table=[csv], val_fraction=0.3, near_dup_threshold=0.5)
    assert stats["dropped"]["near_duplicate"] == 2  # `related` is now a near duplicate too


def test_split_is_seeded_deterministic_and_the_datamodule_rule(tmp_path):
    kw = dict(
        interviews=[str(FIX / "press_briefing.txt")],
        speaker="the president",
        multi_turn=True,
        identity_profile=str(PROFILES / "biden.yaml"),
        val_fraction=0.2,
        cluster_threshold=1.0,
    )
    out, rows, stats = run(tmp_path, "a", **kw)
    again, _, _ = run(tmp_path, "b", **kw)
    assert all((out / f).read_bytes() == (again / f).read_bytes() for f in ("train.jsonl", "val.jsonl"))
    _, rows7, _ = run(tmp_path, "c", **{**kw, "seed": 7})
    assert rows7["val"] != rows["val"] and sorted(map(json.dumps, every(rows7))) == sorted(map(json.dumps, every(rows)))
    assert stats["clusters"] == len(every(rows)) - 4  # only the 4 multi-turn records join another record's cluster
    for side in ("train", "val"):
        for r in rows[side]:
            if "messages" in r and r["kind"] == "policy":
                continue  # follows its twin, checked below
            assert (split_bucket(to_conversation(r)["messages"], 42) < 0.2) == (side == "val"), r
    twins = {
        (r["source"], r["turn"], "prompt" in r): s for s in ("train", "val") for r in rows[s] if r["kind"] == "policy"
    }
    assert all(twins[(src_, turn, False)] == twins[(src_, turn, True)] for src_, turn, single in twins if not single)


def test_stats_match_the_written_files(full, tokenizer):
    out, rows, stats = full
    recs = every(rows)
    assert stats["records"] == {"train": len(rows["train"]), "val": len(rows["val"]), "test": 0, "total": len(recs)}

    def count(key):
        return {k: sum(r[key] == k for r in recs) for k in sorted({r[key] for r in recs})}

    assert stats["kinds"] == count("kind") and stats["sources"] == count("source")

    def ntok(t):
        return len(tokenizer(t, add_special_tokens=False)["input_ids"])

    lengths = sorted(ntok(prompt_text(r)) + ntok(completion(r)) for r in recs)

    def rank(p):
        return lengths[math.ceil(p / 100 * len(lengths)) - 1]

    assert stats["tokens"] == {"p50": rank(50), "p90": rank(90), "p99": rank(99), "max": lengths[-1]}
    assert stats["dropped"] == {
        "bad_file": 0,
        "bad_line": 0,
        "heldout_stance": 0,
        "retweet": 1,
        "truncated": 0,
        "missing_profile_field": 0,
        "too_short": 2,
        "too_long": 0,
        "prompt_too_long": 0,
        "exact_duplicate": 2,  # rows 4 and 5 once their closing hashtags go
        "near_duplicate": 0,
    }
    assert all(ntok(completion(r)) <= 200 and ntok(prompt_text(r)) <= 256 for r in recs)
    assert all(len(completion(r).split()) - 1 >= 5 for r in recs)
    assert all(r["kind"] and r["source"] for r in recs) and sorted(p.name for p in out.iterdir()) == [
        "stats.json",
        "train.jsonl",
        "val.jsonl",
    ]


# -- errors -----------------------------------------------------------------------------------------------------
TPL = json.dumps(
    [
        {"question": "Who?", "answer": "I am {name}.", "topic": "who"},
        {"question": "Pets?", "answer": "My dog is {dog_name}.", "topic": "pets"},
    ],
    indent=1,
)
ERRORS = {  # case -> (files to write, prepare arguments, what the one-line message must say)
    "missing input": ({}, {"transcripts": ["nope.txt"]}, "nope.txt: no such file"),
    "wrong suffix": ({"a.pdf": "x"}, {"transcripts": ["a.pdf"]}, "a.pdf: --transcripts takes"),
    "empty folder": ({"d/readme.rst": "x"}, {"transcripts": ["d"]}, "d: folder holds no"),
    "non-utf8": (
        {"bad.txt": b"Fine first line.\nSecond \xff\xfe line.\n"},
        {"transcripts": ["bad.txt"]},
        "bad.txt:2: not valid UTF-8",
    ),
    "no usable text": (
        {"s.md": "# Title\n\n(Applause.)\n[cheers]\n"},
        {"transcripts": ["s.md"]},
        "s.md: no usable text",
    ),
    "no speaker": (
        {"i.txt": "Q  Hi?\n\nTHE PRESIDENT:  Hello there all.\n"},
        {"interviews": ["i.txt"]},
        "i.txt: --interviews needs --speaker",
    ),
    "speaker absent": (
        {"i.txt": "Q  Hi?\n\nTHE PRESIDENT:  Hello.\n"},
        {"interviews": ["i.txt"], "speaker": "THE MAYOR"},
        "i.txt: speaker 'THE MAYOR' never speaks (labels found: Q, THE PRESIDENT)",
    ),
    "no labels": ({"i.txt": "Just a speech.\n"}, {"interviews": ["i.txt"], "speaker": "X"}, "i.txt: no speaker labels"),
    "malformed csv": (
        {"p.csv": 'id,text\n1,"fine words here"\n2,"broken "quote" here"\n'},
        {"table": ["p.csv"]},
        "p.csv:3: malformed CSV",
    ),
    "csv fields": ({"p.csv": "id,text\n1,a,b\n"}, {"table": ["p.csv"]}, "p.csv:2: expected 2 fields"),
    "malformed jsonl": (
        {"q.jsonl": '{"text": "ok"}\n{"text": oops}\n'},
        {"table": ["q.jsonl"]},
        "q.jsonl:2: malformed JSON",
    ),
    "not an object": (
        {"q.jsonl": '{"text": "ok"}\n[1, 2]\n'},
        {"table": ["q.jsonl"]},
        "q.jsonl:2: expected a JSON object",
    ),
    "non-string text": (
        {"q.jsonl": '{"text": "ok"}\n{"text": 5}\n'},
        {"table": ["q.jsonl"]},
        "q.jsonl:2: 'text' must be a string",
    ),
    "json not a list": ({"q.json": '{"text": "ok"}'}, {"table": ["q.json"]}, "q.json: a .json table must be a list"),
    "malformed json": (
        {"q.json": '[\n{"text": "ok"},\n{"text": }\n]'},
        {"table": ["q.json"]},
        "q.json:3: malformed JSON",
    ),
    "missing column": (
        {"p.csv": "id,body\n1,hello\n"},
        {"table": ["p.csv"]},
        "p.csv: no column 'text' (columns: body, id)",
    ),
    "unknown placeholder": (
        {"p.csv": "id,text\n1,hello\n"},
        {"table": ["p.csv"], "table_prompt": "About {mood}?"},
        "p.csv: --table_prompt uses {mood}",
    ),
    "row lacks placeholder": (
        {"q.jsonl": '{"text": "a b c d e", "v": "x"}\n{"text": "a b c d e f"}\n'},
        {"table": ["q.jsonl"], "table_prompt": "At {v}?"},
        "q.jsonl:2: no value for {v}",
    ),
    "template placeholder": (
        {"tpl.json": TPL},
        {"identity_profile": "biden", "identity_template": "tpl.json"},
        "tpl.json: entry 2 ('Pets?'): unknown placeholder {dog_name}",
    ),
    "template malformed": (
        {"tpl.json": TPL[:-3]},
        {"identity_profile": "biden", "identity_template": "tpl.json"},
        "tpl.json:11: malformed JSON",
    ),
    "template missing": (
        {},
        {"identity_profile": "biden", "identity_template": "none.json"},
        "none.json: identity template",
    ),
    "profile missing": ({}, {"identity_profile": "nobody_here"}, "nobody_here: no such profile"),
    "profile broken": (
        {"p.yaml": "name: [unclosed\n"},
        {"identity_profile": "p.yaml"},
        "p.yaml:2: not a readable YAML",
    ),
    "nothing to do": ({}, {}, "nothing to prepare"),
    "bad fraction": ({}, {"identity_profile": "biden", "val_fraction": 1.5}, "--val_fraction 1.5 is out of range"),
    "chat record's kind not a string": (  # it was a traceback from stats.json's counts, after the tokenizer loaded
        {"r.jsonl": '{"messages": [{"role": "user", "content": "USER: hi"}, '
                    '{"role": "assistant", "content": "POLITICIAN: one two three four five"}], "kind": 5}\n'},
        {"records": ["r.jsonl"]},
        "r.jsonl:1: 'kind' must be a string, got int",
    ),
    "two files of one name": (  # records, stats and --heldout_documents would merge them
        {"x/s.txt": "We fixed the locks this spring.\n", "y/s.txt": "We built the bridge this fall.\n"},
        {"transcripts": ["x", "y"]},
        "2 input files are named s.txt",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(ERRORS))
def test_user_errors_name_the_file_and_write_nothing(case, tmp_path, monkeypatch):
    files, kwargs, expected = ERRORS[case]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "profiles").symlink_to(PROFILES)
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    kwargs = {"identity_template": str(TEMPLATE), **kwargs}
    with pytest.raises(UserError) as e:
        prepare("out", tokenizer=str(ROOT / "checkpoints" / "tiny-politician"), **kwargs)
    message = str(e.value)
    assert expected in message and "\n" not in message, message
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".out", "out"))]


def test_an_output_folder_that_holds_an_input_is_refused_even_with_overwrite(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "s.txt").write_text("We fixed the locks this spring, and the bridge is next.\n")
    with pytest.raises(UserError, match="holds the input .*s.txt, which writing it would delete"):
        prepare(str(tmp_path / "in"), transcripts=[str(tmp_path / "in" / "s.txt")], overwrite=True,
                tokenizer=str(ROOT / "checkpoints" / "tiny-politician"))  # fmt: skip
    assert (tmp_path / "in" / "s.txt").is_file()  # the user's transcript is still there


@pytest.mark.parametrize("flag", ["identity_profile", "identity_template", "stances", "tokenizer"])
def test_an_output_folder_that_holds_a_profile_template_or_tokenizer_is_refused_even_with_overwrite(tmp_path, flag):
    """Only transcripts, interviews, tables and records were checked: --overwrite deleted a profile, the identity
    template or the tokenizer kept in the output folder (found by a hunt)."""
    out = tmp_path / "out"
    out.mkdir()
    biden, tiny = PROFILES / "biden.yaml", ROOT / "checkpoints" / "tiny-politician"
    inputs = {"identity_profile": biden, "identity_template": TEMPLATE, "stances": biden, "tokenizer": tiny}
    kept = out / inputs[flag].name
    (shutil.copytree if inputs[flag].is_dir() else shutil.copy)(inputs[flag], kept)
    kwargs = {"identity_profile": str(biden), "identity_template": str(TEMPLATE), "tokenizer": str(tiny)}
    kwargs |= {flag: str(kept)}
    with pytest.raises(UserError, match=f"holds the input {re.escape(str(kept))}, which writing it would delete"):
        prepare(str(out), overwrite=True, **kwargs)
    assert kept.exists()


def test_records_saved_with_a_byte_order_mark_are_read(tmp_path):
    rows = [{"prompt": f"USER: What about road {i}?", "completion": f"POLITICIAN: We fix road {i} this year, {i}."}
            for i in range(12)]  # fmt: skip
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8-sig")
    _, written, _ = run(tmp_path, records=[str(tmp_path / "r.jsonl")], val_fraction=0.3, cluster_threshold=1.0)
    assert len(every(written)) == 12


def test_existing_output_needs_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("old")
    with pytest.raises(
        UserError, match=r"out: output folder exists; choose another --output_dir or pass --overwrite true"
    ):
        prepare(str(tmp_path / "out"), identity_profile=str(PROFILES / "biden.yaml"))
    assert (tmp_path / "out" / "keep.txt").read_text() == "old"
    out, _, _ = run(tmp_path, identity_profile=str(PROFILES / "biden.yaml"), overwrite=True, val_fraction=0.3)
    assert sorted(p.name for p in out.iterdir()) == ["stats.json", "train.jsonl", "val.jsonl"]


def test_bad_tokenizer_and_empty_split_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no-such-tokenizer: cannot load a tokenizer"):
        run(tmp_path, identity_profile=str(PROFILES / "biden.yaml"), tokenizer=str(tmp_path / "no-such-tokenizer"))
    with pytest.raises(UserError, match="val_fraction=0.01 of 3 records leaves the val split empty"):
        run(tmp_path, table=[str(FIX / "quotes.jsonl")], val_fraction=0.01)
    assert not (tmp_path / "out").exists()


def test_skip_bad_counts_instead_of_failing(tmp_path):
    (tmp_path / "p.csv").write_text(
        'id,text\n1,"The first good row has enough words in it."\n2,"broken "quote" here"\n'
        '3,"The second good row also has plenty of words."\n4,a,b\n',
        "utf-8",
    )
    (tmp_path / "q.jsonl").write_bytes(
        b'{"text": "A good quote with more than five words."}\n{"text": oops}\n'
        b'{"text": "Bad \xff byte"}\n{"body": "no text column here"}\n'
    )
    (tmp_path / "bad.txt").write_bytes(b"Speech \xff text.\n")
    (tmp_path / "ok.txt").write_text(
        "First sentence here. Second sentence is long enough to keep. Third one too, with several more words.", "utf-8"
    )
    (tmp_path / "r.jsonl").write_text(  # ready-made records: one good, one malformed, one without a completion
        '{"prompt": "USER: And the ferries?", "completion": "POLITICIAN: They run on time, every single day."}\n'
        '{"prompt": "USER: x", \n{"prompt": "USER: And the locks?"}\n',
        "utf-8",
    )
    _, rows, stats = run(
        tmp_path,
        transcripts=[str(tmp_path / "bad.txt"), str(tmp_path / "ok.txt")],
        table=[str(tmp_path / "p.csv"), str(tmp_path / "q.jsonl")],
        records=[str(tmp_path / "r.jsonl")],
        skip_bad=True,
        val_fraction=0.5,
        seed=2,
    )
    assert stats["dropped"]["bad_line"] == 7 and stats["dropped"]["bad_file"] == 1
    assert stats["sources"] == {"ok.txt": 1, "p.csv": 2, "q.jsonl": 1, "r.jsonl": 1}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", "", "empty CSV"),
        ("dict.json", '{"text": "An object, not a list of objects."}', "a .json table must be a list of objects"),
        ("broken.json", '[{"text": "An unclosed list of objects."}', "malformed JSON"),
    ],
)
def test_skip_bad_skips_a_table_that_is_wrong_as_a_whole(tmp_path, name, content, message):
    """A table file unusable as a whole is a bad file: --skip_bad counts it and goes on, without it one line."""
    (tmp_path / name).write_text(content, "utf-8")
    good = [
        "Bridges in the north county need new steel this year.",
        "Our schools will open longer hours for parents.",
        "The harbor dredging starts in spring, on budget.",
        "Farmers get a fair price when the co-op is strong.",
    ]
    (tmp_path / "ok.csv").write_text("id,text\n" + "".join(f'{i},"{t}"\n' for i, t in enumerate(good)), "utf-8")
    tables = [str(tmp_path / name), str(tmp_path / "ok.csv")]
    _, _, stats = run(tmp_path, table=tables, skip_bad=True, val_fraction=0.5, seed=2)
    assert stats["dropped"]["bad_file"] == 1 and stats["sources"] == {"ok.csv": 4}
    with pytest.raises(UserError, match=message):
        run(tmp_path, "again", table=tables, val_fraction=0.5, seed=2)


def test_output_folder_inside_an_input_folder_is_not_read_back(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "quotes.jsonl").write_bytes((FIX / "quotes.jsonl").read_bytes())
    (data / ".hidden.jsonl").write_text('{"text": "never read because the file is hidden"}\n')
    for _ in range(2):
        out = prepare(
            str(data / "prepared"),
            table=[str(data)],
            tokenizer=str(ROOT / "checkpoints" / "tiny-politician"),
            val_fraction=0.5,
            seed=1,
            overwrite=True,
        )
        stats = json.loads((out / "stats.json").read_text())
        assert stats["sources"] == {"quotes.jsonl": 3} and stats["dropped"]["exact_duplicate"] == 0


# -- end to end -------------------------------------------------------------------------------------------------
def test_files_a_folder_holds_that_prepare_cannot_read_are_named_not_dropped_silently(tmp_path, caplog):
    for name in ("a.txt", "b.docx", "c.docx", "d.pdf", "e.csv", ".notes.rtf", ".git/x.pack"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("We will fix the roads.\n", "utf-8")
    with caplog.at_level("WARNING"):
        assert expand([str(tmp_path)], TEXT_SUFFIXES, "transcripts") == [tmp_path / "a.txt"]
    # documents are named with their counts; tables (another input) and hidden files are not
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path}: skipped 3 file(s) that --transcripts cannot read (.docx 2, .pdf 1); "
        "convert them to .txt/.md/.markdown text to use them"
    ]
    (tmp_path / "a.txt").unlink()
    caplog.clear()
    with (
        pytest.raises(UserError, match="folder holds no .txt/.md/.markdown/.srt/.vtt files"),
        caplog.at_level("WARNING"),
    ):
        expand([str(tmp_path)], TEXT_SUFFIXES, "transcripts")
    assert "(.docx 2, .pdf 1)" in caplog.text  # the error comes with what the folder did hold


def test_output_loads_in_the_datamodule(full, tmp_path, tiny_path):
    from politician_lm import PoliticianDataModule

    out, rows, stats = full
    dm = PoliticianDataModule(data_path=str(out), tokenizer=tiny_path, cache_dir=str(tmp_path / "cache"))
    dm.setup("fit")
    assert len(dm.train_dataset) == stats["records"]["train"] and len(dm.val_dataset) == stats["records"]["val"]
    assert set(dm.train_dataset["kind"]) == {"style", "policy", "identity"}
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == batch["labels"].shape


def test_signature_is_a_documented_cli():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_function_arguments(prepare)
    help_text = " ".join(parser.format_help().split())
    for name in prepare.__code__.co_varnames[: prepare.__code__.co_argcount]:
        assert f"--{name} " in help_text
    assert "word 3-gram Jaccard similarity" in help_text and "comma-separate aliases" in help_text
    cfg = parser.parse_args(["--output_dir", "o", "--transcripts", "[a.txt, b.md]", "--speaker", "THE PRESIDENT"])
    assert cfg.transcripts == ["a.txt", "b.md"] and cfg.max_completion_tokens == 200 and cfg.skip_bad is False


def test_runs_as_a_jsonargparse_verb(tmp_path, capsys):
    from jsonargparse import auto_cli

    out = auto_cli(
        prepare,
        as_positional=False,
        exit_on_error=False,
        args=[
            "--output_dir",
            str(tmp_path / "o"),
            "--table",
            f"[{FIX / 'posts.csv'}, {FIX / 'quotes.jsonl'}]",
            "--identity_profile",
            str(PROFILES / "trump.yaml"),
            "--identity_template",
            str(TEMPLATE),
            "--tokenizer",
            str(ROOT / "checkpoints" / "tiny-politician"),
            "--val_fraction",
            "0.25",
        ],
    )
    assert out == tmp_path / "o" and (out / "train.jsonl").is_file()
    printed = capsys.readouterr().out
    assert (
        re.search(r"prepared \d+ records \(\d+ train / \d+ val\)", printed)
        and "retweet 1" in printed.split("dropped:")[1]
    )
