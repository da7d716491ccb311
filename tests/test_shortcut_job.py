"""The modality-shortcut audit stored per prompt, and snapshots leaving flagged prompts out."""

from __future__ import annotations

from earmark.services.datasets import SnapshotFilters
from pipelines.shortcut_job import run_shortcut_audit


def test_shortcut_decisions_stored_and_excluded(em, tmp_path) -> None:
    from audio_util import tone_wav

    (tmp_path / "q.wav").write_bytes(tone_wav(0.5))
    em.catalog.import_prompts(
        [
            {
                "external_id": "leaky",
                "regime": "reasoning",
                "reference": {"answer": "42"},
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "The answer is 42. What is it?"},
                            {"type": "audio", "base64": __import__("base64").b64encode(tone_wav(0.5)).decode()},
                        ],
                    }
                ],
            },
            {
                "external_id": "needs-audio",
                "regime": "reasoning",
                "reference": {"answer": "seven"},
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "How many beeps do you hear?"},
                            {"type": "audio", "path": str(tmp_path / "q.wav")},
                        ],
                    }
                ],
            },
            {"external_id": "no-ref", "regime": "realtime", "messages": [{"role": "user", "content": "hi"}]},
        ],
        audio_root=tmp_path,  # audio paths must resolve under the audio root (default: the current directory)
    )
    results = {r["prompt_id"]: r for r in run_shortcut_audit(em)}
    ids = {p.external_id: p for p in em.catalog.prompts()}
    assert results[ids["leaky"].id]["decision"] == "remove"
    assert results[ids["needs-audio"].id]["decision"] == "retain"
    assert ids["leaky"].id not in results or "shortcut:remove" in ids["leaky"].tags
    assert em.catalog.shortcut_prompt_ids() == [ids["leaky"].id]
    assert "shortcut:retain" in ids["needs-audio"].tags and not any(
        t.startswith("shortcut") for t in ids["no-ref"].tags
    )
    assert SnapshotFilters().exclude_shortcut is True
