"""Build a small annotated world through the real services: personas, prompts, rollouts, users."""

from __future__ import annotations

from audio_util import tone

from earmark.domain.enums import Role
from earmark.domain.records import RolloutCreate
from earmark.security import Principal


def seed_rollouts(em, n_prompts: int = 4, k: int = 2, policy: str = "pol") -> dict:
    em.catalog.import_personas(
        [
            {
                "name": "librarian",
                "display_name": "Mara",
                "description": "a calm librarian",
                "style": "slow and low",
                "prosody": {"f0_mean_hz": 90},
            }
        ]
    )
    rep = em.catalog.import_prompts(
        [
            {
                "external_id": f"q{i}",
                "regime": "realtime",
                "persona": "librarian",
                "messages": [{"role": "user", "content": f"question number {i}?"}],
            }
            for i in range(n_prompts)
        ]
    )
    pol = em.catalog.register_policy(policy, "file:///ckpt")
    rows = []
    for pid in rep.ids.values():
        for s in range(k):
            blob = em.blobs.put_waveform(tone(0.3 + 0.1 * s, 16000, 180 + 40 * s), 16000)
            rows.append(
                RolloutCreate(
                    prompt_id=pid,
                    policy_id=pol.id,
                    sample_index=s,
                    messages=[],
                    text=f"answer {s} to prompt {pid}",
                    audio_sha256=blob.sha256,
                    duration_s=blob.duration_s,
                )
            )
    keys = em.rollouts.ingest(rows)
    return {"policy": pol, "prompts": rep.ids, "rollouts": keys}


def make_user(em, name: str, role: Role = Role.rater, password: str = "correct horse battery") -> Principal:
    admin = em.as_principal(Principal(None, "bootstrap", Role.admin))
    info = admin.users.ensure(name, password, role)
    return Principal(info.id, info.username, info.role)


def record_judgment_counts(record_property, per_item: list[int], items: int, k: int, extra_duplicates: int = 0) -> None:
    """Judgments lost and duplicated, as measured from each item's judgment count against k (read by
    bench/reliability.py); ``extra_duplicates``: same-rater or same-slot doubles found otherwise."""
    record_property("judgments_expected", items * k)
    record_property("judgments_lost", sum(max(k - n, 0) for n in per_item) + k * (items - len(per_item)))
    record_property("duplicates", extra_duplicates + sum(max(n - k, 0) for n in per_item))
