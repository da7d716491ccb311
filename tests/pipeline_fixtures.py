"""Data for pipeline tests: the offline policy registered with a few persona prompts."""

from __future__ import annotations


def seed_offline(em, checkpoint, n_prompts=4, multi=True):
    em.catalog.import_personas(
        [
            {
                "name": "librarian",
                "display_name": "Mara",
                "description": "a calm librarian who loves quiet reading rooms",
                "style": "Speaks slowly and softly in a low voice, with thoughtful pauses between sentences.",
                "prosody": {"f0_mean_hz": 85, "rate_wps": 2.3},
            }
        ]
    )
    questions = [
        "How can I fall asleep faster?",
        "What should I read next?",
        "How do I keep a plant alive?",
        "Any tips for a rainy day?",
        "How do I start journaling?",
        "What is a good way to relax?",
    ]
    prompts = [
        {
            "external_id": f"q{i}",
            "regime": "realtime",
            "persona": "librarian",
            "messages": [{"role": "user", "content": questions[i]}],
        }
        for i in range(n_prompts)
    ]
    if multi:
        prompts.append(
            {
                "external_id": "multi",
                "regime": "realtime",
                "persona": "librarian",
                "messages": [
                    {"role": "user", "content": "How can I fall asleep faster?"},
                    {"role": "user", "content": "What if I still can't sleep?"},
                ],
            }
        )
    em.catalog.import_prompts(prompts)
    return em.catalog.register_policy("offline-speech", checkpoint.as_uri(), kind="offline")


def own_ray_processes(psutil):  # noqa: ANN001, ANN201
    """Processes of the Ray cluster this test process started (its raylet's workers are our
    descendants), never another session's or another user's actors on the same machine."""
    import os

    return psutil.Process(os.getpid()).children(recursive=True)


def _cmdline(proc) -> list[str]:  # noqa: ANN001
    try:
        return proc.cmdline()
    except Exception:  # gone, or not ours to read
        return []


def _cmdline_has(proc, needle: str) -> bool:  # noqa: ANN001
    return any(needle in part for part in _cmdline(proc))


def kill_actor_mid_job(job, actor_class: str, progressed, poll_s: float = 0.02):
    """Run ``job()`` on a thread; once ``progressed()`` is true, SIGKILL one live process of Ray
    actor ``actor_class`` (a crash, not a polite shutdown) in this test's own Ray cluster.
    Returns (job result, killed pid)."""
    import os
    import signal
    import threading
    import time

    import psutil

    out: dict = {}
    thread = threading.Thread(target=lambda: out.setdefault("res", job()))
    thread.start()
    killed = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and thread.is_alive():
        pids = [p.pid for p in own_ray_processes(psutil) if _cmdline_has(p, actor_class)]
        if pids and progressed():
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(poll_s)
    thread.join(timeout=300)
    seen = sorted({" ".join(_cmdline(p))[:40] for p in own_ray_processes(psutil)})
    assert killed is not None, f"the job finished before an actor could be killed; make it longer (saw {seen})"
    assert "res" in out, f"the job did not finish after its {actor_class} was killed"
    return out["res"], killed
