import pytest

from politician_lm.artifacts.roles import (
    assistant_turn,
    has_role_label,
    strip_politician_label,
    strip_reply_label,
    strip_role_label,
    user_turn,
)


@pytest.mark.parametrize(
    "text,any_label,reply,politician",
    [
        ("USER: hi", "hi", "USER: hi", "USER: hi"),
        ("POLITICIAN: Folks, look.", "Folks, look.", "Folks, look.", "Folks, look."),
        ("  assistant :\nHello", "Hello", "\nHello", "  assistant :\nHello"),
        ("Human: hey", "hey", "Human: hey", "Human: hey"),
        ("No label here: really", "No label here: really", "No label here: really", "No label here: really"),
    ],
)
def test_each_stripper_takes_only_its_labels(text, any_label, reply, politician):
    assert strip_role_label(text) == any_label
    assert strip_reply_label(text) == reply
    assert strip_politician_label(text) == politician


def test_turns_carry_the_labels_only_in_the_plain_format():
    assert user_turn("Jobs?", "plain") == {"role": "user", "content": "USER: Jobs?"}
    assert user_turn("USER: Jobs?", "plain")["content"] == "USER: Jobs?"
    assert user_turn("Jobs?", "chat")["content"] == "Jobs?"
    assert assistant_turn("  Folks.", "plain") == {"role": "assistant", "content": "POLITICIAN: Folks."}
    assert assistant_turn("Folks.", "chat")["content"] == "Folks."
    assert has_role_label("politician: x") and not has_role_label("x: y")


@pytest.mark.parametrize(
    "head,held",
    [
        ("", True),
        ("  ", True),
        ("POLI", True),
        (" politician:", True),
        ("Assis", True),
        ("POLITICIAN: Folks", False),
        ("Folks", False),
        ("USER", False),
    ],
)
def test_a_streamer_holds_back_only_what_may_still_become_a_reply_label(head, held):
    from politician_lm.artifacts.roles import may_become_reply_label

    assert may_become_reply_label(head) is held
