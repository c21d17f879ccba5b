"""Interviews as press offices, transcription services and hearing records print them: each answer is the named
politician's words only, asked by the question that was actually asked. Every line here is written for the test."""

import pytest
from transformers import AutoTokenizer

from politician_lm.data.prepare.build import RecordBuilder
from politician_lm.data.prepare.transcripts import read_interview
from tests.helpers import ROOT

TINY = str(ROOT / "checkpoints" / "tiny-politician")

FORMATS = {
    "numbered service labels": (
        "Joe Biden: (00:14)\nWe released oil from the reserve.\n\nAudience Member 1: (01:02)\nWill you cancel student "
        "loans?\n\nJoe Biden: (01:08)\nI will cancel ten thousand dollars.\n\nSpeaker 2: (01:20)\nAnd for rural "
        "families?\n\nJoe Biden: (01:24)\nThem too.\n",
        {"JOE BIDEN"},
        [("Will you cancel student loans?", "I will cancel ten thousand dollars."),
         ("And for rural families?", "Them too.")],
    ),
    "numbered upper-case labels": (
        "Q: How was the trip?\n\nTHE PRESIDENT: It went well.\n\nREPORTER 2: Sir, one more on the border?\n\n"
        "THE PRESIDENT: The border is secure.\n",
        {"THE PRESIDENT"},
        [("How was the trip?", "It went well."), ("Sir, one more on the border?", "The border is secure.")],
    ),
    "Congressional Record roles": (
        "Mr. BIDEN. I would ratify it this year.\n\nThe CHAIRMAN. Thank you. Senator Jones, you are recognized.\n\n"
        "Senator JONES. Will you ratify the treaty?\n\nMr. BIDEN. Yes, this year.\n\nChairman SMITH. Time is up.\n",
        {"MR. BIDEN"},
        [("Will you ratify the treaty?", "Yes, this year.")],
    ),
    "press-office titles": (
        "Q. Will you sign the bill?\n\nThe President. I will sign it if it is good.\n\nVice President Harris. And, "
        "Mr. President, the Senate is close.\n\nPress Secretary Psaki. That is all the time we have.\n",
        {"THE PRESIDENT"},
        [("Will you sign the bill?", "I will sign it if it is good.")],
    ),
    "hearing paragraphs marked by indentation": (
        "      STATEMENT OF THE HONORABLE JANE ROE\n\n    Ms. ROE. Thank you, Mr. Chairman. I am glad to be\n"
        "here today.\n    Senator KAINE. Ms. Roe, what is your view of the\ntrade agreement?\n"
        "    Ms. ROE. It is a good deal for workers.\n",
        {"MS. ROE"},
        [("Ms. Roe, what is your view of the trade agreement?", "It is a good deal for workers.")],
    ),
    "points are not speakers": (
        "Interviewer: What is your plan for housing?\nBiden: Here is my plan. It has two parts.\nFirst: we build two "
        "million homes. Second: we cap rent increases.\nInterviewer: And taxes?\nBiden: No new taxes.\n",
        {"BIDEN"},
        [("What is your plan for housing?",
          "Here is my plan. It has two parts. First: we build two million homes. Second: we cap rent increases."),
         ("And taxes?", "No new taxes.")],
    ),
    "points are not speakers in upper-case transcripts": (
        "Q: What will you do about housing?\n\nTHE PRESIDENT: Three things.\n\nFirst: we build homes.\n\n"
        "Second: we cap rents.\n\nQ: And taxes?\n\nTHE PRESIDENT: No new taxes.\n",
        {"THE PRESIDENT"},
        [("What will you do about housing?", "Three things. First: we build homes. Second: we cap rents."),
         ("And taxes?", "No new taxes.")],
    ),
    "an empty turn does not hide the question": (
        "Jake Tapper: (00:10)\nWhat will you do about egg prices?\n\nAudience: (00:15)\n[applause]\n\n"
        "Joe Biden: (00:18)\nWe are going after price gouging. And we are helping farmers.\n",
        {"JOE BIDEN"},
        [("What will you do about egg prices?", "We are going after price gouging. And we are helping farmers.")],
    ),
    "a heckle is not the question": (
        "MODERATOR: What about the war?\n\nAUDIENCE MEMBER: Ceasefire now!\n\n"
        "THE PRESIDENT: We are working for a ceasefire.\n",
        {"THE PRESIDENT"},
        [("What about the war?", "We are working for a ceasefire.")],
    ),
    "the other leader's answer is not the question": (
        "Q: A question for both of you: will you meet again?\n\nPRESIDENT MACRON: Nothing can be ruled out.\n\n"
        "THE PRESIDENT: We will meet in June.\n",
        {"THE PRESIDENT"},
        [("A question for both of you: will you meet again?", "We will meet in June.")],
    ),
    "a time of day in lower case": (
        "Q: The central bank?\n\nTHE PRESIDENT: I respect its independence.\n\n2:14 p.m. EDT\n",
        {"THE PRESIDENT"},
        [("The central bank?", "I respect its independence.")],
    ),
    "Q and A wrapped onto a new line": (
        "Q: How did the town hall go?\n\nTHE PRESIDENT: It went very well. We did a full hour of\n"
        "Q and A with the voters, and they asked tough questions.\n",
        {"THE PRESIDENT"},
        [("How did the town hall go?",
          "It went very well. We did a full hour of Q and A with the voters, and they asked tough questions.")],
    ),
    "a name with its outlet": (
        "Lester Holt (NBC) (00:01):\nWhat about jobs?\n\nJoe Biden (00:03):\nJobs are up.\n\n"
        "Lester Holt (NBC): And wages?\nJoe Biden: Wages too.\n",
        {"JOE BIDEN"},
        [("What about jobs?", "Jobs are up."), ("And wages?", "Wages too.")],
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TINY)


@pytest.mark.parametrize("case", list(FORMATS))
def test_each_answer_is_the_politicians_and_follows_its_question(case, tokenizer, tmp_path):
    text, speakers, expected = FORMATS[case]
    path = tmp_path / "interview.txt"
    path.write_text(text, "utf-8")
    builder = RecordBuilder(tokenizer, max_completion_tokens=256, min_completion_words=1, max_prompt_tokens=256)
    builder.add_interview(path, read_interview(path, speakers), speakers, multi_turn=False)
    policy = [c.record for c in builder.candidates if c.record["kind"] == "policy"]
    assert [(r["prompt"], r["completion"]) for r in policy] == [(f"USER: {q}", f"POLITICIAN: {a}") for q, a in expected]
