"""The configured reward composition served over HTTP for trainers outside earmark.

Protocol: OpenRLHF's remote reward model (``--remote_rm_url http://host:port/get_reward``):
``POST /get_reward`` with ``{"query": [prompt+response, ...], "prompts": [prompt, ...],
"labels": [reference answer, ...]}`` answers ``{"rewards": [...], "scores": [...], "extra_logs":
{...}}``. Optional ``"audio": [base64 WAV | null, ...]`` lets speech trainers send the rendered
response so acoustic scorers take part, and ``"regime"`` picks the composition weights.
veRL: ``reward_models.remote.compute_score`` is a custom reward function that calls this server.

Every served score is recorded like any other: the request becomes a rollout of the policy
``external/<client>`` on a prompt keyed by the prompt text's hash, with one reward_scores row per
dimension plus the composed ``total``/``verifiable``/``preference`` rows of the ``composition``
reward model. A bearer token is required; the server binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from earmark.domain.records import RewardModelCreate, RolloutCreate

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_BATCH = 512


class RewardService:
    """Scores batches with the configured scorers + composition and records everything."""

    def __init__(
        self, em: Any, scorer_specs: list[dict[str, Any]], regime: str = "realtime", client: str = "openrlhf"
    ) -> None:
        from pipelines.scoring_job import ScorerSpec, register
        from reward_models.composition import RewardComposition

        self.em = em
        self.regime = regime
        self.scorers = register(em, [ScorerSpec(**s) for s in scorer_specs])
        self.composition = RewardComposition()
        comp = em.scores.register_reward_model(
            RewardModelCreate(
                name="composition",
                version=self.composition.version,
                kind="learned",
                dimensions=["total", "verifiable", "preference"],
                config={"regime": regime},
            )
        )
        self.composition_id = comp.id
        self.policy = em.catalog.register_policy(
            f"external-{client}", "external://" + client, kind="external", version=0
        )
        self.lock = threading.Lock()

    def score(
        self,
        queries: list[str],
        prompts: list[str],
        labels: list[Any] | None,
        audio: list[str | None] | None,
        regime: str | None,
    ) -> dict[str, Any]:
        from earmark.audio import decode
        from reward_models.base import ScoringInput

        regime = regime or self.regime
        items, keys = [], []
        for i, q in enumerate(queries):
            prompt = prompts[i] if i < len(prompts) else ""
            response = q[len(prompt) :] if prompt and q.startswith(prompt) else q
            label = labels[i] if labels and i < len(labels) else None
            wav = None
            if audio and i < len(audio) and audio[i]:
                wav = decode(base64.b64decode(audio[i], validate=True))
            ref = {"answer": label, "text": label} if isinstance(label, str) else label
            items.append(
                ScoringInput(
                    regime=regime,
                    messages=[{"role": "user", "content": prompt}],
                    reference=ref,
                    response_text=response.strip(),
                    audio=wav[0] if wav else None,
                    sample_rate=wav[1] if wav else None,
                )
            )
            keys.append((prompt, response))
        per_item: list[dict[str, float]] = [{} for _ in items]
        raw: list[list[Any]] = [[] for _ in items]
        for scorer, rm_id in self.scorers:
            try:
                results = scorer.score_batch(items)
            except ValueError as exc:  # e.g. a verifiable scorer without labels: skip it, say why
                log.info("scorer %s skipped: %s", scorer.name, exc)
                continue
            for j, res in enumerate(results):
                for r in res:
                    per_item[j][r.dimension] = float(r.score)
                    raw[j].append((rm_id, r))
        composed = [self.composition.compose(regime, d) for d in per_item]
        with self.lock:
            self._record(keys, regime, raw, composed)
        return {
            "rewards": [c.total for c in composed],
            "scores": [c.total for c in composed],
            "extra_logs": {
                "verifiable": [c.verifiable for c in composed],
                "preference": [c.preference for c in composed],
            },
        }

    def _record(self, keys: list[tuple[str, str]], regime: str, raw: list[list[Any]], composed: list[Any]) -> None:
        em = self.em
        prompt_rows = []
        for prompt, _ in keys:
            ext = "ext-" + hashlib.sha256(prompt.encode()).hexdigest()[:16]
            prompt_rows.append(
                {
                    "external_id": ext,
                    "regime": regime,
                    "split": "test",
                    "tags": ["served"],
                    "messages": [{"role": "user", "content": prompt or "(empty prompt)"}],
                }
            )
        em.catalog.import_prompts(list({r["external_id"]: r for r in prompt_rows}.values()), source="reward server")
        ids = {p.external_id: p.id for p in em.catalog.prompts(external_ids=[r["external_id"] for r in prompt_rows])}
        rollouts = []
        for (_prompt, response), pr in zip(keys, prompt_rows, strict=True):
            rnd = int(hashlib.sha256(response.encode()).hexdigest()[:7], 16)  # same response, same row
            rollouts.append(
                RolloutCreate(
                    prompt_id=ids[pr["external_id"]],
                    policy_id=self.policy.id,
                    round=rnd,
                    sample_index=0,
                    messages=[{"role": "assistant", "content": response}],
                    text=response[:20_000],
                )
            )
        stored = em.rollouts.ingest(rollouts)
        rows = []
        for ro, scored, comp in zip(rollouts, raw, composed, strict=True):
            rid = stored[(ro.prompt_id, ro.policy_id, ro.sample_index, ro.round)]
            rows += [
                (rid, rm_id, r.dimension, float(r.score), r.rationale[:4000] or None, r.features or None)
                for rm_id, r in scored
            ]
            for dim in ("total", "verifiable", "preference"):
                v = getattr(comp, dim)
                if v is not None:
                    rows.append((rid, self.composition_id, dim, float(v), None, {"regime": regime}))
        em.scores.ingest(rows)


def make_handler(service: RewardService, token: str) -> type[BaseHTTPRequestHandler]:
    expected = f"Bearer {token}".encode()

    class Handler(BaseHTTPRequestHandler):
        server_version = "earmark-reward/1"

        def log_message(self, fmt: str, *args: Any) -> None:  # requests go to our logger, never headers
            log.debug("%s %s", self.address_string(), fmt % args)

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            if self.path.rstrip("/") not in ("/get_reward", "/reward"):
                return self._send(404, {"error": f"unknown path {self.path}; POST /get_reward"})
            auth = (self.headers.get("Authorization") or "").encode()
            if not hmac.compare_digest(auth, expected):
                return self._send(401, {"error": "missing or wrong bearer token; send Authorization: Bearer <token>"})
            length = int(self.headers.get("Content-Length") or 0)
            if length <= 0 or length > MAX_BODY_BYTES:
                return self._send(413 if length else 400, {"error": f"body must be 1..{MAX_BODY_BYTES} bytes of JSON"})
            try:
                data = json.loads(self.rfile.read(length))
                queries = data["query"]
                if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
                    raise ValueError("'query' must be a list of strings")
                if len(queries) > MAX_BATCH:
                    raise ValueError(f"at most {MAX_BATCH} queries per request; split the batch")
                result = service.score(
                    queries, data.get("prompts") or [], data.get("labels"), data.get("audio"), data.get("regime")
                )
            except (KeyError, ValueError, TypeError) as exc:
                return self._send(400, {"error": f"bad request: {exc}"})
            except Exception:  # noqa: BLE001 - log server-side, answer without internals
                log.exception("reward scoring failed")
                return self._send(500, {"error": "scoring failed; see the server log"})
            return self._send(200, result)

    return Handler


def serve(service: RewardService, token: str, host: str = "127.0.0.1", port: int = 5000) -> ThreadingHTTPServer:
    if not token or len(token) < 16:
        raise ValueError("the reward server needs a bearer token of at least 16 characters (EARMARK_REWARD_TOKEN)")
    server = ThreadingHTTPServer((host, port), make_handler(service, token))
    threading.Thread(target=server.serve_forever, daemon=True, name="earmark-reward-server").start()
    return server
