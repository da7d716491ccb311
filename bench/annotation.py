"""Claim+submit latency at 32 concurrent raters on real PostgreSQL, and double claims (must be 0).

    python bench/annotation.py [--raters 32] [--items 200] [--overlap 3] [--processes 1,2,4]
                               [--browser-judgments 12] [--no-browser | --browser-only]

Also (issue 18): a saturated run with the raters split across 1, 2 and 4 worker processes on one
PostgreSQL (the ``processes`` section: judgments/s, p99, double claims), and a browser-timed figure:
chromium against ``streamlit run``, from the Submit click to the next item's audio playable (p50,
p99; on the page's clock, from the button's click event to the first frame with every clip of the
next item playable; ``submit_to_next_playable_driver_ms`` is the same transition timed around
Playwright's ``click()``, which adds the driver's actionability checks and round trips), and bytes received per judgment (WebSocket frames plus HTTP bodies, listening reruns included).
With it, two figures that load inflates much less than wall time: the server's script CPU time for
the submit's run (``EARMARK_LOG_LEVEL=DEBUG`` timing lines, ``annotation_ui/timing.py``) and the
browser's main-thread busy time from the click to the next item playable. ``--browser-only`` runs
just this part.

Each rater is a thread calling the real TaskService (claim -> item view -> submit). Latency is the
time of the claim call plus the submit call, as a browser would wait for them. Target:
p99 < 25 ms on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from _db import scratch_database  # noqa: E402
from annotation_fixtures import make_user, seed_rollouts  # noqa: E402

import earmark  # noqa: E402
from earmark.config import Settings  # noqa: E402
from earmark.domain.enums import Role  # noqa: E402
from earmark.security import Principal  # noqa: E402
from earmark.services.campaigns import CampaignCreate  # noqa: E402
from earmark.simulate import double_claims, run_raters  # noqa: E402


def _worker(url: str, home: str, principals: list[Principal], campaign_id: int, barrier, q) -> None:
    """One app process: its own engine and pool, its share of the raters as threads, saturated."""
    em = earmark.connect(Settings(home=Path(home), database_url=url), pool_size=len(principals) + 2)
    conns = [em.ctx.engine.connect() for _ in principals]
    for conn in conns:
        conn.close()
    ems = [em.as_principal(p) for p in principals]
    barrier.wait()  # every process connected and warm before the clock starts
    start = time.time()
    stats = run_raters(ems, campaign_id, p_skip=0.1, deadline_s=900, think_s=0.0, start_spread_s=0.0)
    q.put((start, time.time(), stats))
    em.close()


def _scale_out(url: str, home: Path, raters: list, campaign_id: int, n_proc: int) -> dict:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    principals = [r.ctx.principal for r in raters]
    shares = [principals[i::n_proc] for i in range(n_proc)]
    barrier = ctx.Barrier(n_proc)
    procs = [ctx.Process(target=_worker, args=(url, str(home), sh, campaign_id, barrier, q)) for sh in shares]
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    start_at = min(t for t, _, _ in results)
    end = max(t for _, t, _ in results)
    stats = [s for _, _, st in results for s in st]
    lat = np.array([x for s in stats for x in s.latencies_ms])
    judged = sum(s.submitted for s in stats)
    wall = end - start_at
    return {
        "judgments": judged,
        "judgments_per_s": round(judged / wall, 1),
        "claim_submit_ms": {
            "p50": round(float(np.percentile(lat, 50)), 2),
            "p99": round(float(np.percentile(lat, 99)), 2),
        },
        "double_claims": double_claims(stats),
    }


# The next item is playable when its clips are on the page (a different task's) and every <audio>
# can play (readyState >= 3, HAVE_FUTURE_DATA: the "canplay" state).
PLAYABLE_JS = (
    "(prev) => { const a = [...document.querySelectorAll(\"[class*='st-key-clip-'] audio\")];"
    " const box = a.length && a[0].closest(\"[class*='st-key-clip-']\");"
    " return a.length >= 2 && box && !box.className.includes('st-key-clip-' + prev + '-')"
    " && a.every((x) => x.readyState >= 3); }"
)
# Times the transition inside the page, on the page's own clock: from the Submit button's click event
# to the first animation frame in which the next item is playable (PLAYABLE_JS's test, checked every
# frame). The driver-side time around ``locator.click()`` adds Playwright's own work before the click
# reaches the page (actionability checks: the button visible, enabled and stable over two frames;
# ~50 ms here) and the round trip back to Python; it is reported too.
ARM_TIMER_JS = (
    "(prev) => { const t = (window.__earmarkSubmit = {});"
    " const btn = document.querySelector(`.st-key-submit-${prev} button`);"
    " btn.addEventListener('click', (e) => { t.click = e.timeStamp; }, {capture: true, once: true});"
    " const ready = " + PLAYABLE_JS + ";"
    " const tick = () => { if (t.click !== undefined && ready(prev)) { t.playable = performance.now(); return; }"
    " requestAnimationFrame(tick); };"
    " requestAnimationFrame(tick); }"
)
TIMER_JS = "() => window.__earmarkSubmit && window.__earmarkSubmit.playable !== undefined"
# Everything below names the task: while a run is in progress the previous item's form can still
# be on the page (stale), and its enabled Submit or checked answers must not count for the next one.
SUBMIT_ENABLED_JS = (
    "(task) => { const b = document.querySelector(`.st-key-submit-${task} button`); return b && !b.disabled; }"
)
ONE_SUBMIT_JS = "(task) => document.querySelectorAll(`.st-key-submit-${task} button`).length === 1"
ANSWERED_JS = (
    "(task) => ['choice', 'dim-prosody', 'dim-persona_consistency', 'dim-correctness']"
    ".every((k) => document.querySelector(`.st-key-${k}-${task} input[type='radio']:checked`))"
)
# Play every clip that is not playing; on a retry (force) also those that ended without counting.
PLAY_ALL_JS = """(force) => document.querySelectorAll("[class*='st-key-clip-'] audio").forEach((a) => {
  if (a.paused && (force || !a.ended)) { a.currentTime = 0; a.play().catch(() => {}); } })"""
ANSWER_JS = """(task) => {
  const pick = (box, text) => { const b = document.querySelector(`.st-key-${box}-${task}`);
    for (const l of (b ? b.querySelectorAll("label") : [])) if (l.innerText.trim() === text) l.click(); };
  pick("choice", "About the same");
  for (const d of ["prosody", "persona_consistency", "correctness"]) pick("dim-" + d, "4");
}"""
TIMING_LINE = re.compile(r"^earmark\.ui\.timing ([\w/-]+) ([0-9.]+) ms cpu ([0-9.]+) ms$", re.M)


def _script_runs(log: Path, offset: int) -> tuple[list[tuple[str, float, float]], int]:
    """Script runs (name, wall ms, thread CPU ms) the server logged since ``offset`` (EARMARK_LOG_LEVEL=DEBUG)."""
    with log.open("rb") as f:
        f.seek(offset)
        chunk = f.read()
    # only whole lines: a line being written stays for the next read
    end = chunk.rfind(b"\n") + 1
    runs = [(m[1], float(m[2]), float(m[3])) for m in TIMING_LINE.finditer(chunk[:end].decode(errors="replace"))]
    return runs, offset + end


def _main_thread_s(cdp) -> float:
    """Seconds the page's main thread has been busy (CDP Performance.TaskDuration): what the browser
    itself spends, which other processes' load inflates far less than wall time."""
    return next(m["value"] for m in cdp.send("Performance.getMetrics")["metrics"] if m["name"] == "TaskDuration")


def _timed_judgments(page, cdp, n: int, received: list[int], log: Path, out: dict[str, list]) -> None:
    """Rate N items in the page: play both clips, answer, then time Submit -> next item playable.
    Retries a play that did not start (on a loaded machine a play() can be dropped); each wait is
    bounded, so a stall fails with a screenshot instead of hanging the run."""
    offset = log.stat().st_size
    for _ in range(n):
        task = page.evaluate(
            "() => /st-key-clip-(\\d+)-/.exec(document.querySelector(\"[class*='st-key-clip-']\").className)[1]"
        )
        before = received[0]
        runs, offset = _script_runs(log, offset)
        for attempt in range(4):
            page.evaluate(PLAY_ALL_JS, attempt > 0)
            try:
                page.wait_for_function(SUBMIT_ENABLED_JS, arg=task, timeout=30_000)
                break
            except Exception:
                if attempt == 3:
                    raise
        page.evaluate(ANSWER_JS, task)
        page.wait_for_function(ANSWERED_JS, arg=task)
        # each answer reruns the item area: until that run ends, the form drawn before it can still be
        # on the page beside the new one (two Submit buttons for this task)
        page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']")
        page.wait_for_function(ONE_SUBMIT_JS, arg=task)
        listen_runs, offset = _script_runs(log, offset)
        submit = page.locator(f".st-key-submit-{task} button")
        page.evaluate(ARM_TIMER_JS, task)
        busy0 = _main_thread_s(cdp)
        t0 = time.perf_counter()
        submit.click()
        page.wait_for_function(PLAYABLE_JS, arg=task)
        out["driver_times"].append((time.perf_counter() - t0) * 1000)
        page.wait_for_function(TIMER_JS)
        out["times"].append(page.evaluate("() => window.__earmarkSubmit.playable - window.__earmarkSubmit.click"))
        out["main_thread_ms"].append((_main_thread_s(cdp) - busy0) * 1000)
        # the submit's own script run(s) have been logged once the next item is on the page
        page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']")
        submit_runs, offset = _script_runs(log, offset)
        out["bytes"].append(received[0] - before)
        # a block inside another is logged as "outer/inner": count each script run once
        top = [r for r in submit_runs if "/" not in r[0]]
        out["submit_script_ms"].append(sum(r[1] for r in top))
        out["submit_script_cpu_ms"].append(sum(r[2] for r in top))
        every = runs + listen_runs + submit_runs
        out["runs"].append(len([r for r in every if "/" not in r[0]]))
        out["run_names"].extend(r[0] for r in every if "/" not in r[0])


def _p50_p99(values: list[float]) -> dict[str, float]:
    return {q: round(float(np.percentile(values, p)), 1) for q, p in (("p50", 50), ("p99", 99))}


def _frame_bytes(frame: dict) -> int:
    """Bytes on the wire of one WebSocket frame's payload (CDP gives binary frames base64-encoded)."""
    data = frame.get("payloadData", "")
    if frame.get("opcode") == 2:
        return len(data) * 3 // 4 - data[-2:].count("=")
    return len(data.encode())


def _browser_figure(em, url: str, home: Path, n: int) -> dict | str:
    """Submit click -> next item playable, in chromium against `streamlit run` on this store."""
    import tempfile

    from streamlit_server import ServedApp

    chromium = Path("/usr/bin/chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return "skipped: the playwright package is not installed"
    if not chromium.exists():
        return "skipped: no chromium at /usr/bin/chromium"
    admin = em.as_principal(Principal(None, "admin", Role.admin))
    admin.campaigns.create(CampaignCreate(name="bench-browser", overlap=1, gold_ratio=0.0, max_items=n + 4, seed=99))
    make_user(em, "browser-rater")
    repo = Path(__file__).resolve().parents[1]
    log = Path(tempfile.mkdtemp(prefix="earmark-bench-ui-")) / "streamlit.log"
    out: dict[str, list] = {
        "times": [], "driver_times": [], "bytes": [], "submit_script_ms": [], "submit_script_cpu_ms": [], "main_thread_ms": [], "runs": [], "run_names": []
    }  # fmt: skip
    app = ServedApp(url, home, log, blob_url=em.settings.blob_url, extra_env={"EARMARK_LOG_LEVEL": "DEBUG"})
    try:
        app.start()
    except RuntimeError as exc:
        return f"skipped: {str(exc)[:300]}"
    try:
        with sync_playwright() as pw:
            b = pw.chromium.launch(
                executable_path=str(chromium),
                args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                      "--disable-background-networking", "--autoplay-policy=no-user-gesture-required"],
            )  # fmt: skip
            try:
                page = b.new_page(viewport={"width": 1280, "height": 800})
                page.set_default_timeout(60_000)
                received = [0]
                cdp = page.context.new_cdp_session(page)
                cdp.send("Network.enable")
                cdp.send("Performance.enable")
                cdp.on(
                    "Network.webSocketFrameReceived",
                    lambda e: received.__setitem__(0, received[0] + _frame_bytes(e["response"])),
                )
                cdp.on(
                    "Network.loadingFinished",
                    lambda e: received.__setitem__(0, received[0] + int(e.get("encodedDataLength", 0))),
                )
                page.goto(app.url)
                page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']")
                page.get_by_role("textbox", name="Username").fill("browser-rater")
                page.get_by_role("textbox", name="Password").fill("correct horse battery")
                page.get_by_role("button", name="Log in").click()
                page.wait_for_function(PLAYABLE_JS, arg=-1)
                try:
                    _timed_judgments(page, cdp, n, received, log, out)
                except Exception:
                    shot = repo / "bench" / "results" / "annotation-browser-timeout.png"
                    shot.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(shot), full_page=True)  # what the page showed when it stalled
                    raise
            finally:
                b.close()
    finally:
        app.stop(graceful=True)
    return {
        "judgments": n,
        "submit_to_next_playable_ms": _p50_p99(out["times"]),
        "submit_to_next_playable_driver_ms": _p50_p99(out["driver_times"]),
        "submit_script_run_ms": _p50_p99(out["submit_script_ms"]),
        "submit_script_cpu_ms": _p50_p99(out["submit_script_cpu_ms"]),
        "browser_main_thread_ms": _p50_p99(out["main_thread_ms"]),
        "script_runs_per_judgment": round(statistics.fmean(out["runs"]), 2),
        "script_runs_by_kind": dict(Counter(out["run_names"])),
        "bytes_per_judgment": int(statistics.fmean(out["bytes"])),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "target": "p50 < 300 ms on an idle machine",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raters", type=int, default=32)
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--overlap", type=int, default=3)
    ap.add_argument(
        "--think-ms",
        type=float,
        default=None,
        help="pause between claim and submit (listening); default: run both paced (500 ms) and saturated (0)",
    )
    ap.add_argument("--processes", default="1,2,4", help="worker process counts for the saturated scale-out run")
    ap.add_argument("--browser-judgments", type=int, default=12)
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--browser-only", action="store_true", help="only the browser-timed figure (no store runs)")
    args = ap.parse_args()
    with scratch_database("earmark_bench_ann") as url:
        import tempfile

        home = Path(tempfile.mkdtemp(prefix="earmark-bench-"))
        em = earmark.connect(Settings(home=home, database_url=url), pool_size=args.raters + 4)
        n_prompts = -(-args.items // 3)
        seed_rollouts(em, n_prompts=n_prompts, k=3)
        if args.browser_only:
            try:
                browser = _browser_figure(em, url, home, args.browser_judgments)
            finally:
                em.close()
            print(json.dumps({"benchmark": "annotation", "browser": browser}, indent=2))
            return
        raters = [em.as_principal(make_user(em, f"r{i:02d}")) for i in range(args.raters)]
        modes = {"paced": 0.5, "saturated": 0.0} if args.think_ms is None else {"custom": args.think_ms / 1000}
        runs = {}
        # A serving process keeps its pool warm: open every connection before timing anything.
        conns = [em.ctx.engine.connect() for _ in range(args.raters)]
        for conn in conns:
            conn.close()
        for i, (mode, think_s) in enumerate(modes.items()):
            c = em.as_principal(Principal(None, "admin", Role.admin)).campaigns.create(
                CampaignCreate(name=f"bench-{mode}", overlap=args.overlap, gold_ratio=0.0, max_items=args.items, seed=i)
            )
            with em.ctx.engine.connect() as conn:  # a live store has planner statistics; a fresh one has none
                conn.exec_driver_sql("ANALYZE")
                conn.commit()
            t0 = time.perf_counter()
            # paced raters arrive spread over one think time; saturated ones all at once (worst case)
            stats = run_raters(raters, c.id, p_skip=0.1, deadline_s=900, think_s=think_s, start_spread_s=think_s)
            wall = time.perf_counter() - t0
            lat = np.array([x for s in stats for x in s.latencies_ms])
            judged = sum(s.submitted for s in stats)
            runs[mode] = {
                "think_ms": think_s * 1000,
                "judgments": judged,
                "expected_judgments": args.items * args.overlap,
                "claim_submit_ms": {
                    q: round(float(np.percentile(lat, p)), 2) for q, p in (("p50", 50), ("p90", 90), ("p99", 99))
                }
                | {"mean": round(statistics.fmean(lat), 2)},
                "judgments_per_s": round(judged / wall, 1),
                "double_claims": double_claims(stats),
            }
        counts = [int(x) for x in args.processes.split(",") if x.strip()]
        processes = {}
        for j, n_proc in enumerate(counts):
            c = em.as_principal(Principal(None, "admin", Role.admin)).campaigns.create(
                CampaignCreate(
                    name=f"bench-procs-{n_proc}",
                    overlap=args.overlap,
                    gold_ratio=0.0,
                    max_items=args.items,
                    seed=10 + j,
                )
            )
            with em.ctx.engine.connect() as conn:
                conn.exec_driver_sql("ANALYZE")
                conn.commit()
            processes[str(n_proc)] = _scale_out(url, home, raters, c.id, n_proc)
        browser = None
        if not args.no_browser:
            try:
                browser = _browser_figure(em, url, home, args.browser_judgments)
            except Exception as exc:  # the store figures above still count; say why this one is missing
                browser = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
        em.close()
    first = next(iter(runs.values()))
    out = {
        "benchmark": "annotation",
        "raters": args.raters,
        "items": args.items,
        "overlap": args.overlap,
        "runs": runs,
        "processes": processes,
        "cores": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 1),
        "processes_target": ">= 1,000 judgments/s on 4 processes where the cores allow, else scaling per core",
        "browser": browser,
        "target": "p99 < 25 ms with raters pacing like people (paced run), double_claims == 0 in every run",
        "target_met": first["claim_submit_ms"]["p99"] < 25 and all(r["double_claims"] == 0 for r in runs.values()),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
