"""Caption files (.srt, .vtt) as prepare inputs: cues, rolling repeats, speakers, and the captions that cannot train.

Every caption here is written for the test."""

import json

import pytest

from politician_lm.commands.prepare import prepare
from politician_lm.data.prepare.files import BadFile
from politician_lm.data.prepare.transcripts import read_interview, read_transcript, speech_paragraphs
from tests.helpers import ROOT

TINY = str(ROOT / "checkpoints" / "tiny-politician")
TEMPLATE = ROOT / "data" / "identity_training_template.json"


def srt(*cues: tuple[float, float, str]) -> str:
    def t(s: float) -> str:
        return f"00:{int(s) // 60:02d}:{int(s) % 60:02d},{int(s * 1000) % 1000:03d}"

    return "\n\n".join(f"{i}\n{t(a)} --> {t(b)}\n{text}" for i, (a, b, text) in enumerate(cues, 1)) + "\n"


def vtt(*cues: tuple[float, float, str]) -> str:
    def t(s: float) -> str:
        return f"00:{int(s) // 60:02d}:{int(s) % 60:02d}.{int(s * 1000) % 1000:03d}"

    return "WEBVTT\n\n" + "\n\n".join(f"{t(a)} --> {t(b)}\n{text}" for a, b, text in cues) + "\n"


CAPTIONS = {
    "broadcast speaker changes": (
        "speech.srt",
        srt(
            (1, 3, ">> THE PRESIDENT: Folks, here's the deal."),
            (3, 5, "We're going to fix the river locks,\nand we're going to do it this year."),
            (5.5, 7, ">> Four more years!"),
            (7, 9, ">> Joe Biden: And the bridges over them."),
        ),
        set(),
        ["Folks, here's the deal. We're going to fix the river locks, and we're going to do it this year."],
    ),
    "the named politician across labels": (
        "speech.srt",
        srt(
            (1, 3, ">> THE PRESIDENT: Folks, here's the deal."),
            (5.5, 7, ">> Four more years!"),
            (7, 9, ">> THE PRESIDENT: And the bridges over the river."),
        ),
        {"THE PRESIDENT"},
        ["Folks, here's the deal.", "And the bridges over the river."],
    ),
    "voice spans": (
        "talk.vtt",
        vtt(
            (1, 3, "<v Moderator>What about the bus routes?</v>"),
            (3, 5, "<v Joe Biden>The night routes come back first.</v>"),
            (5, 7, "<v Joe Biden><i>Then</i> the weekend ones."),
            (7, 9, "<v Moderator>Thank you, Mr. President."),
        ),
        {"JOE BIDEN"},
        ["The night routes come back first. Then the weekend ones."],
    ),
    "rolling captions and word timings": (
        "auto.vtt",
        vtt(
            (0, 2.5, "Folks,<00:00:00.400><c> here's</c><00:00:00.800><c> the</c><00:00:01.000><c> deal.</c>"),
            (2.5, 2.51, "Folks, here's the deal.\n "),
            (2.51, 5, "Folks, here's the deal.\nWe're going<00:00:03.000><c> to build</c>"),
            (5, 5.01, "We're going to build\n "),
            (5.01, 7, "We're going to build\nthe bridge."),
        ),
        set(),
        ["Folks, here's the deal. We're going to build the bridge."],
    ),
    "tags, character references and music": (
        "speech.srt",
        srt(
            (1, 3, '<i>We will</i> <font color="#ffff00">build</font> the bridge. [APPLAUSE]'),
            (3.5, 5, "(CHEERING) And we&#39;ll pay for it &amp; more. ♪ our town, our song ♪"),
            (5, 6, "♪ ♪"),
        ),
        set(),
        ["We will build the bridge. And we'll pay for it & more."],
    ),
    "unnamed changes are never the politician": (
        "rally.srt",
        srt(
            (1, 3, ">> Ladies and gentlemen, please welcome the Governor!"),
            (3, 5, ">> THE PRESIDENT: Thank you. Please, sit down."),
            (5, 6, ">> We love you!"),
            (6, 8, ">>> THE PRESIDENT: I love you back. {\\an8}Now, the plan. >> Four more years!"),
        ),
        set(),
        ["Thank you. Please, sit down.", "I love you back. Now, the plan."],
    ),
    "two speakers in one cue": (
        "talk.srt",
        srt(
            (1, 3, ">> Joe Biden: We fixed the locks this spring."),
            (3, 5, "- Are you running again?\n- I intend to run, yes."),
            (5, 7, ">> Joe Biden: And the bridges over them are next."),
        ),
        {"JOE BIDEN"},
        ["We fixed the locks this spring.", "And the bridges over them are next."],
    ),
    "a full name starting a cue": (
        "meeting.vtt",
        vtt(
            (1, 3, "Maria Lopez: Welcome. Our guest tonight is the senator."),
            (3, 5, "Jane Doe: Thank you, Maria. We will build the new clinic on the harbor road this year."),
        ),
        set(),
        ["Thank you, Maria. We will build the new clinic on the harbor road this year."],
    ),
    "a pause inside a sentence ends no paragraph": (
        "speech.srt",
        srt((1, 3, "And tonight the people of"), (7, 9, "Pittsburgh are the reason we won."), (13, 15, "Next.")),
        set(),
        ["And tonight the people of Pittsburgh are the reason we won.", "Next."],
    ),
    "a pause ends a paragraph": (
        "speech.srt",
        srt((1, 3, "We fixed the locks."), (3.2, 5, "All of them."), (9, 11, "Now the bridges.")),
        set(),
        ["We fixed the locks. All of them.", "Now the bridges."],
    ),
}


@pytest.mark.parametrize("case", list(CAPTIONS))
def test_captions_become_the_politicians_paragraphs(case, tmp_path):
    name, text, speakers, expected = CAPTIONS[case]
    (tmp_path / name).write_text(text, "utf-8")
    assert [p.text for p in speech_paragraphs(name, read_transcript(tmp_path / name), speakers)] == expected


UNUSABLE = {
    "upper case only": (
        srt((1, 3, ">> THE PRESIDENT: FOLKS, HERE'S THE DEAL."), (3, 5, "WE FIX THE LOCKS.")),
        "upper case",
    ),
    "no punctuation": (
        srt(*[(i, i + 1, "folks here is the deal we are going to fix the river locks this year") for i in range(8)]),
        "no sentence punctuation",
    ),
    "not captions": ("This is a transcript saved as .srt by mistake.\n", "not a readable .srt caption file"),
    "no text": (srt((1, 3, "  ")), "hold no text"),
    "upper case under a voice span": (
        vtt((1, 3, "<v Joe Biden>THANK YOU ALL. WE HAVE WORK TO DO."), (3, 5, "<v Joe Biden>[Applause] LET'S GO.")),
        "upper case",
    ),
    "no punctuation but titles": (
        srt(*[(i, i + 1, "folks mr smith and mr. jones are here and we are going to fix the locks") for i in range(9)]),
        "no sentence punctuation",
    ),
    "every change unnamed": (srt((1, 3, ">> Thank you all."), (3, 5, ">> We love you!")), "name no one"),
}


@pytest.mark.parametrize("case", list(UNUSABLE))
def test_captions_that_cannot_train_are_one_line_bad_files(case, tmp_path):
    text, message = UNUSABLE[case]
    path = tmp_path / ("bad.vtt" if text.startswith("WEBVTT") else "bad.srt")
    path.write_text(text, "utf-8")
    with pytest.raises(BadFile, match=message) as e:
        speech_paragraphs(str(path), read_transcript(path), set())
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_prepare_reads_caption_speeches_and_interviews(tmp_path):
    speeches, talks = tmp_path / "speeches", tmp_path / "talks"
    speeches.mkdir(), talks.mkdir()
    sentences = [f"We will {v} the {n} in county {i}." for i, (v, n) in enumerate(zip(["fix", "open", "fund"] * 6,
                 ["locks", "clinic", "school", "port", "library", "rail"] * 3))]  # fmt: skip
    cues = [(2 * i, 2 * i + 1.5, s) for i, s in enumerate(sentences)]
    (speeches / "rally.srt").write_text(srt((0, 0.5, ">> THE PRESIDENT: Thank you all."), *cues, (40, 41, ">> Boo!")))
    questions = [f"What will you do about the {n}?" for n in ("locks", "clinic", "school", "port")]
    turns = []
    for i, q in enumerate(questions):
        turns += [(10 * i, 10 * i + 2, f"<v Moderator>{q}"), (10 * i + 2, 10 * i + 5, f"<v Joe Biden>{sentences[i]}")]
    (talks / "town-hall.vtt").write_text(vtt(*turns))
    assert [t.label for t in read_interview(talks / "town-hall.vtt", {"JOE BIDEN"})][:2] == ["MODERATOR", "JOE BIDEN"]
    out = prepare(str(tmp_path / "out"), transcripts=[str(speeches)], interviews=[str(talks)], speaker="Joe Biden",
                  tokenizer=TINY, identity_template=str(TEMPLATE), val_fraction=0.3, seed=1)  # fmt: skip
    rows = [json.loads(x) for s in ("train", "val") for x in (out / f"{s}.jsonl").read_text("utf-8").splitlines()]
    assert {r["source"].split(":")[0] for r in rows} == {"rally.srt", "town-hall.vtt"}
    text = json.dumps(rows)
    for leak in ("-->", ">>", "<v", "Boo", "Moderator", "00:0", "THE PRESIDENT"):
        assert leak not in text, leak
    policy = {(r["prompt"], r["completion"]) for r in rows if r["kind"] == "policy"}
    assert ("USER: What will you do about the locks?", f"POLITICIAN: {sentences[0]}") in policy
