"""Build a small annotated world through the real services: personas, prompts, rollouts, users."""
from __future__ import annotations

from audio_util import tone
from earmark.domain.enums import Role
from earmark.domain.records import RolloutCreate
from earmark.security import Principal


def seed_rollouts(em, n_prompts: int = 4, k: int = 2, policy: str = "pol") -> dict:
    em.catalog.import_personas([{"name": "librarian", "display_name": "Mara", "description": "a calm librarian",
                                 "style": "slow and low", "prosody": {"f0_mean_hz": 90}}])
    rep = em.catalog.import_prompts([
        {"external_id": f"q{i}", "regime": "realtime", "persona": "librarian",
         "messages": [{"role": "user", "content": f"question number {i}?"}]} for i in range(n_prompts)])
    pol = em.catalog.register_policy(policy, "file:///ckpt")
    rows = []
    for pid in rep.ids.values():
        for s in range(k):
            blob = em.blobs.put_waveform(tone(0.3 + 0.1 * s, 16000, 180 + 40 * s), 16000)
            rows.append(RolloutCreate(prompt_id=pid, policy_id=pol.id, sample_index=s, messages=[],
                                      text=f"answer {s} to prompt {pid}", audio_sha256=blob.sha256,
                                      duration_s=blob.duration_s))
    keys = em.rollouts.ingest(rows)
    return {"policy": pol, "prompts": rep.ids, "rollouts": keys}


def make_user(em, name: str, role: Role = Role.rater, password: str = "correct horse battery") -> Principal:
    admin = em.as_principal(Principal(None, "bootstrap", Role.admin))
    info = admin.users.ensure(name, password, role)
    return Principal(info.id, info.username, info.role)
