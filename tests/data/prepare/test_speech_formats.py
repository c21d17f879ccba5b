"""Speeches as researchers bring them: only the politician's words reach a completion, never a title, a dateline,
a section heading or the host who introduced them. Every line here is written for the test."""

import pytest

from politician_lm.data.prepare.files import BadFile
from politician_lm.data.prepare.transcripts import speech_paragraphs

SPEECHES = {
    "title, dateline and place before the speech": (
        "Remarks by the Governor on the State Budget\n\nMarch 3, 2024\n\nDes Moines, Iowa\n\n"
        "We will fix the roads. We will pay teachers more.\n\nThank you.\n",
        ["We will fix the roads. We will pay teachers more.", "Thank you."],
    ),
    "headings in title case between sections": (
        "We start with the budget. It is balanced.\n\nHealth Care and Prescription Drugs\n\n"
        "Insulin will cost thirty five dollars.\n\nThe Future of Our Schools\n\nTeachers will earn more.\n",
        ["We start with the budget. It is balanced.", "Insulin will cost thirty five dollars.",
         "Teachers will earn more."],
    ),
    "a sentence broken over two paragraphs is speech, joined again": (
        "When we see\n\nwhat our workers built, we are proud.\n",
        ["When we see what our workers built, we are proud."],
    ),
    "run-in headings in upper case": (
        "Remarks on the Budget\n\nENERGY: We will build new transmission lines. They carry clean power.\n\n"
        "EDUCATION: Every child deserves a good teacher.\n\n"
        "HEALTH CARE: No family should go broke because someone got sick. We will cap insulin at thirty five "
        "dollars a month, and we will expand clinics in rural towns.\n\nThank you, and God bless.\n",
        ["We will build new transmission lines. They carry clean power.", "Every child deserves a good teacher.",
         "No family should go broke because someone got sick. We will cap insulin at thirty five dollars a month, "
         "and we will expand clinics in rural towns.", "Thank you, and God bless."],
    ),
    "a host who introduces the speaker is not the speaker": (
        "HOST: Good evening and welcome to the town hall. Please welcome the senator.\n\n"
        "Thank you so much. It is great to be back in Dayton.\n\nWe need jobs that stay here.\n",
        ["Thank you so much. It is great to be back in Dayton.", "We need jobs that stay here."],
    ),
    "a moderator who says more than the speaker is not the speaker": (
        "MODERATOR: Good evening. Tonight's forum runs ninety minutes, with questions from the floor after the "
        "opening remarks, and the rules were agreed by both campaigns in advance of tonight.\n\n"
        "SENATOR WARREN: Thank you. I am glad to be here.\n",
        ["Thank you. I am glad to be here."],
    ),
    "speakers used once each are speakers, not headings": (
        "SENATOR WARREN: We will cancel the debt.\n\nTHE PRESIDENT: I disagree, and I will say why.\n\n"
        "MS. ROE: Time is up.\n",
        ["I disagree, and I will say why."],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(SPEECHES))
def test_a_speech_keeps_only_the_politicians_words(case):
    text, expected = SPEECHES[case]
    assert [p.text for p in speech_paragraphs("speech.txt", text, set())] == expected


def test_mojibake_control_and_zero_width_characters_never_reach_a_speech():
    text = "It\u00e2\u0080\u0099s a good day\x07 for\u200b Dayton. We are caf\u00c3\u00a9 people.\n\nThank you.\n"
    assert [p.text for p in speech_paragraphs("speech.txt", text, set())] == [
        "It’s a good day for Dayton. We are café people.",
        "Thank you.",
    ]


def test_an_unpunctuated_transcript_is_refused_in_one_line_not_made_into_nothing():
    text = " ".join(["we will build roads and bridges for every family in this state"] * 20) + "\n"
    with pytest.raises(BadFile, match=r"speech\.txt: the text has almost no sentence punctuation"):
        speech_paragraphs("speech.txt", text, set())


def test_capitalised_speakers_without_speaker_are_kept_as_text_with_a_warning(caplog):
    text = "".join(
        f"Interviewer: What about the roads in county {i}?\n\nJoe Biden: We fix them. All of them.\n\n"
        for i in range(3)
    )
    kept = [p.text for p in speech_paragraphs("talk.txt", text, set())]
    assert "talk.txt: lines start with 'Interviewer:', 'Joe Biden:'" in caplog.text and "set --speaker" in caplog.text
    assert kept[0] == "Interviewer: What about the roads in county 0?"
    caplog.clear()
    kept = [p.text for p in speech_paragraphs("talk.txt", text, {"JOE BIDEN"})]
    assert kept == ["We fix them. All of them."] * 3 and not caplog.text
    caplog.clear()  # run-in headings listed twice ask no question: no warning
    speech_paragraphs(
        "budget.txt", "Energy: We built.\n\nJobs: We hired.\n\nEnergy: We build.\n\nJobs: We hire.\n", set()
    )
    assert not caplog.text
