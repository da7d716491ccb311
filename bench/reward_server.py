"""Reward service throughput vs a bare aiohttp endpoint, like for like; prints JSON only.

64 concurrent keep-alive clients post OpenRLHF-shaped requests (GSM8K-style prompt + response,
verifiable scorers answer_match + tool_calls, regime reasoning) at batch 1 and batch 8, to earmark
(`pipelines.reward_service`, serving events committed before each answer) and to a bare aiohttp
endpoint that reads the body and returns constants, with the same number of worker processes,
alternating bare/earmark rounds in one run. Per batch size: queries/s of each, ``vs_bare``
(earmark over bare), p50/p99 latency, and ``recorded_exactly_once`` (every acknowledged item has
exactly one serving event, found by its sample uid). earmark runs with its default durability
(``server``: answered once the events are committed); the ``disk`` section is a second earmark
service in the same alternation that also waits for each commit's flush to disk
(``--durability disk``).

    PYTHONPATH=platform:. python bench/reward_server.py [--workers 2] [--seconds 5] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "platform"), str(ROOT)]

TOKEN = "bench-token-0123456789-abcdefghijklmnopq"
PROMPT = (
    "Question: Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May? Think step by step.\nAnswer:"
)
RESPONSE = " In April she sold 48 clips. In May she sold 48/2 = 24 clips. Altogether 48 + 24 = 72 clips.\n#### 72"

BARE = """
import sys
from aiohttp import web
BODY = {}
async def handle(request):
    await request.read()
    return web.Response(body=b'{"rewards":[1.0],"scores":[1.0],"extra_logs":{"valid":[1.0]}}',
                        content_type="application/json")
app = web.Application(client_max_size=32 * 1024 * 1024)
app.router.add_post("/get_reward", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), reuse_port=True, access_log=None, print=None)
"""

EARMARK = """
import sys
from pipelines.reward_service.app import ServiceConfig
from pipelines.reward_service.server import run
cfg = ServiceConfig(conninfo=sys.argv[2], scorers=[{"name": "answer_match"}, {"name": "tool_calls"}],
                    regime="reasoning", **({"durability": sys.argv[4]} if len(sys.argv) > 4 else {}))
run(cfg, port=int(sys.argv[1]), workers=int(sys.argv[3]))
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_up(url: str, timeout: float = 120) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while True:
            try:
                async with s.post(
                    url, json={"query": ["#### 1"], "labels": ["1"]}, headers={"Authorization": f"Bearer {TOKEN}"}
                ) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up")
            await asyncio.sleep(0.2)


async def load(url: str, batch: int, seconds: float, clients: int, tag: str) -> dict:
    import aiohttp

    lat: list[float] = []
    acked: list[str] = []
    errors = 0
    conn = aiohttp.TCPConnector(limit=clients)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(connector=conn) as s:
        t_end = time.perf_counter() + seconds

        async def one(c: int) -> None:
            nonlocal errors
            k = 0
            while time.perf_counter() < t_end:
                uids = [f"{tag}-{c}-{k}-{j}" for j in range(batch)]
                k += 1
                body = {
                    "query": [PROMPT + RESPONSE] * batch,
                    "prompts": [PROMPT] * batch,
                    "labels": ["72"] * batch,
                    "sample_uids": uids,
                }
                t0 = time.perf_counter()
                try:
                    async with s.post(url, json=body, headers=headers) as r:
                        await r.read()
                        ok = r.status == 200
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    lat.append(time.perf_counter() - t0)
                    acked.extend(uids)
                else:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one(c) for c in range(clients)))
        wall = time.perf_counter() - t0
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else None  # noqa: E731
    return {
        "qps": len(acked) / wall,
        "rps": len(lat) / wall,
        "p50_ms": q(0.5),
        "p99_ms": q(0.99),
        "errors": errors,
        "acked": acked,
    }


def agg(rs: list[dict]) -> dict:
    return {
        "qps": sum(r["qps"] for r in rs) / len(rs),
        "qps_per_round": [round(r["qps"], 1) for r in rs],
        "p50_ms": sorted(r["p50_ms"] for r in rs)[len(rs) // 2],
        "p99_ms": max(r["p99_ms"] for r in rs),
        "errors": sum(r["errors"] for r in rs),
    }


def versus(rounds: list[dict], bare_rounds: list[dict], bare: dict, counts: dict[str, int]) -> dict:
    """One earmark side against the bare rounds it alternated with; every acknowledged item's
    serving events counted by its sample uid."""
    acked = [u for r in rounds for u in r["acked"]]
    e = agg(rounds)
    return {
        "earmark": e,
        "vs_bare": round(e["qps"] / bare["qps"], 3),
        "vs_bare_per_round": [round(x["qps"] / y["qps"], 3) for x, y in zip(rounds, bare_rounds)],
        "recorded_exactly_once": bool(acked) and all(counts.get(u) == 1 for u in acked),
        "acked_items": len(acked),
        "events_for_acked": sum(counts.get(u, 0) for u in acked),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clients", type=int, default=64)
    args = ap.parse_args()

    import psycopg
    from sqlalchemy.engine import make_url

    sys.path.insert(0, str(ROOT / "bench"))
    from _db import scratch_database

    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT}", "EARMARK_REWARD_TOKEN": TOKEN}
    procs: list[subprocess.Popen] = []
    with scratch_database("earmark_bench_rs") as url:
        conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            bare_port, em_port = free_port(), free_port()
            for _ in range(args.workers):  # aiohttp: one process per worker on a shared port (SO_REUSEPORT)
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-c", BARE, str(bare_port)],
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                )
            disk_port = free_port()
            for port, extra in ((em_port, []), (disk_port, ["disk"])):
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-c", EARMARK, str(port), conninfo, str(args.workers), *extra],
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                )
            urls = {
                "bare": f"http://127.0.0.1:{bare_port}/get_reward",
                "earmark": f"http://127.0.0.1:{em_port}/get_reward",
                "earmark_disk": f"http://127.0.0.1:{disk_port}/get_reward",
            }
            for u in urls.values():
                asyncio.run(wait_up(u))
            for u in urls.values():  # warm-up
                asyncio.run(load(u, 1, 1.0, args.clients, "warm"))
            out: dict = {
                "clients": args.clients,
                "workers_each": args.workers,
                "seconds_per_round": args.seconds,
                "rounds": args.rounds,
                "scorers": ["answer_match", "tool_calls"],
                "durability": "server",
                "cpus": os.cpu_count(),
                "loadavg_before": [round(x, 2) for x in os.getloadavg()],  # absolute figures need an idle machine
                "batches": {},
            }
            for batch in (1, 8):
                runs: dict[str, list[dict]] = {"bare": [], "earmark": [], "earmark_disk": []}
                for rnd in range(args.rounds):
                    for name in ("bare", "earmark", "earmark_disk"):  # alternating, same run
                        runs[name].append(
                            asyncio.run(load(urls[name], batch, args.seconds, args.clients, f"b{batch}-r{rnd}-{name}"))
                        )
                with psycopg.connect(conninfo) as c:
                    counts = dict(
                        c.execute(
                            "SELECT sample_uid, count(*) FROM serving_events WHERE sample_uid LIKE %s GROUP BY 1",
                            (f"b{batch}-%",),
                        ).fetchall()
                    )

                b = agg(runs["bare"])
                out["batches"][str(batch)] = {
                    "bare": b,
                    **versus(runs["earmark"], runs["bare"], b, counts),
                    "disk": versus(runs["earmark_disk"], runs["bare"], b, counts),
                }
            out["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
            print(json.dumps(out, indent=1))
        finally:
            for p in procs:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(timeout=20)
                except Exception:  # noqa: BLE001
                    os.killpg(p.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
