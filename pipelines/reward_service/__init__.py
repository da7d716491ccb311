"""The reward service: the configured reward composition served over HTTP (ASGI: Starlette on
uvicorn) for trainers outside earmark, in the protocol stock OpenRLHF and veRL speak.

- ``protocol``: request/response models (OpenRLHF's ``{"query", "prompts", "labels"}``).
- ``limits``: what a request may hold, checked before any work.
- ``auth``: named tokens stored as hashes; HTTP Basic (token as password) and Bearer.
- ``scoring``: per-item scoring + composition; a bad item gets its own error and a masked reward.
- ``recorder``: one serving event per served score, written by one bulk writer (COPY, group
  commit); a request is answered only after its events are committed.
- ``app``: the Starlette app; ``server``: uvicorn (workers, TLS, timeouts, concurrency cap).

docs/reward_service.md says how to point OpenRLHF and veRL at it.
"""
