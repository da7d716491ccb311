"""The one message-to-text rule (earmark.domain.messages.content_text) and the one persona system message."""

from __future__ import annotations

from earmark.domain.messages import Message, content_text, message_text
from earmark.domain.persona_text import persona_system_message, with_persona


def test_text_parts_and_audio_transcripts_in_order() -> None:
    content = [
        {"type": "text", "text": "Hello"},
        {"type": "audio", "audio_sha256": "a" * 64, "transcript": "how are you"},
        {"type": "audio", "audio_sha256": "b" * 64},  # no transcript: adds nothing
        {"type": "token", "ids": [1, 2, 3]},  # token ids are not text
        "today?",
    ]
    assert content_text(content) == "Hello how are you today?"
    assert content_text("plain") == "plain" and content_text(None) == "" and content_text([]) == ""
    assert message_text({"role": "user", "content": content}) == "Hello how are you today?"
    assert Message.model_validate({"role": "user", "content": content[:2]}).text() == "Hello how are you"


def test_persona_system_message_leads_unless_one_is_given() -> None:
    card = {"name": "Ada", "description": "a calm guide", "speaking_style": "Speaks slowly."}
    msgs = [{"role": "user", "content": "hi"}]
    out = with_persona(msgs, card)
    assert (
        out[0]
        == persona_system_message(card)
        == {"role": "system", "content": "You are Ada, a calm guide. Speaks slowly."}
    )
    assert out[1:] == msgs and msgs == [{"role": "user", "content": "hi"}]  # the input is not changed
    given = [{"role": "system", "content": "custom"}, *msgs]
    assert with_persona(given, card) == given and with_persona(msgs, None) == msgs
