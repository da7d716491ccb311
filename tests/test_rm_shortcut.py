"""Modality-shortcut audit: a prompt whose answer is in its text is removed, an audio-only one kept."""

from __future__ import annotations

from reward_models.shortcut import AUDIO_PLACEHOLDER, audit_prompt, audit_prompts, strip_audio

AUDIO = {"type": "audio", "blob": "sha256:00ff", "sample_rate": 16000}
LEAKY = {
    "id": "p1",
    "reference": {"answer": "seven"},
    "messages": [
        {"role": "user", "content": [AUDIO, {"type": "text", "text": "The speaker says 7 apples. How many apples?"}]}
    ],
}
AUDIO_ONLY = {
    "id": "p2",
    "reference": {"answer": "seven"},
    "messages": [
        {"role": "user", "content": [AUDIO, {"type": "text", "text": "How many apples does the speaker mention?"}]}
    ],
}
NO_REF = {"id": "p3", "messages": [{"role": "user", "content": "Tell me a story."}]}


def text_only_policy(messages) -> str:
    """Stand-in for a text-only policy run: answers from the text when it can, else guesses."""
    text = " ".join(p.get("text", "") for m in messages for p in m["content"] if isinstance(p, dict))
    assert AUDIO_PLACEHOLDER in text  # it never saw the audio
    return "There are 7 apples." if "7" in text else "I cannot tell without listening."


def test_flags_leak_and_retains_audio_only() -> None:
    res = {r["prompt_id"]: r for r in audit_prompts([LEAKY, AUDIO_ONLY, NO_REF], text_only_policy)}
    assert res["p1"]["decision"] == "remove" and res["p1"]["answer_in_text"] is True
    assert res["p1"]["text_only_accuracy"] == 1.0 and len(res["p1"]["reasons"]) == 2
    assert res["p2"]["decision"] == "retain" and res["p2"]["answer_in_text"] is False
    assert res["p2"]["text_only_accuracy"] == 0.0 and res["p2"]["reasons"] == []
    assert res["p3"]["decision"] == "retain" and "not audited" in res["p3"]["note"]


def test_text_only_model_alone_can_remove_and_chance_threshold() -> None:
    # the answer is not in the text, but a text-only model still gets it (e.g. world knowledge)
    r = audit_prompt(AUDIO_ONLY["messages"], "seven", lambda m: "seven", prompt_id="p2")
    assert r["decision"] == "remove" and not r["answer_in_text"]
    # a guesser right 1 time in 4 is within a 0.5 chance threshold
    answers = iter(["yes", "no", "no", "no"])
    r = audit_prompt(AUDIO_ONLY["messages"], "yes", lambda m: next(answers), n_samples=4, max_text_only_accuracy=0.5)
    assert r["decision"] == "retain" and r["text_only_accuracy"] == 0.25
    # check-only mode (no answer_fn)
    assert audit_prompt(LEAKY["messages"], ["seven", "7"])["decision"] == "remove"


def test_strip_audio_does_not_mutate() -> None:
    stripped = strip_audio(LEAKY["messages"])
    assert stripped[0]["content"][0] == {"type": "text", "text": AUDIO_PLACEHOLDER}
    assert LEAKY["messages"][0]["content"][0] is AUDIO
