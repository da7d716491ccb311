"""Reference log-probs computed once per (snapshot, reference policy) and kept beside the snapshot.

DPO needs log ref(y|x) for every chosen and rejected response. The reference is frozen, so these
numbers never change: compute them in one inference pass before training (no reference model in
memory during training, no second forward per step) and store them as a sidecar Parquet
(row_id, ref_chosen_logp, ref_rejected_logp) in the blob store. The run summary records the
sidecar's sha256 under a key that hashes the data, the reference weights and the recipe (end
token, context limit), so training the same snapshot against the same reference again reuses it.
"""

from __future__ import annotations

import hashlib
import io
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.training.data import PreferencePair

if TYPE_CHECKING:
    from earmark.api import Earmark

SIDECAR_VERSION = 1
SIDECAR_MIME = "application/vnd.apache.parquet"


def weights_sha256(model_dir: Path) -> str:
    """Hash of the checkpoint's weight files (the manifest's own hash may be its parent's)."""
    files = sorted(Path(model_dir).glob("*.safetensors")) or sorted(Path(model_dir).glob("*.bin"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors or *.bin weights in {model_dir}; pass a saved checkpoint folder")
    h = hashlib.sha256()
    for f in files:
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def reference_key(data_sha256: str, ref_weights_sha256: str, *, append_end: bool, context: int | None) -> str:
    recipe = f"v{SIDECAR_VERSION}:end={int(append_end)}:ctx={context}"
    return hashlib.sha256(f"{data_sha256}:{ref_weights_sha256}:{recipe}".encode()).hexdigest()


def compute(
    model: Any,
    pairs: list[PreferencePair],
    pad_id: int,
    *,
    limit: int | None,
    threads: int = 1,
    chunk_tokens: int = 4096,
) -> tuple[list[float], list[float]]:
    """(ref chosen, ref rejected) summed log-probs, in pair order."""
    import torch

    from pipelines.training.sequences import sequence_logps
    from pipelines.training.worker import set_threads

    set_threads(threads)
    model.eval()
    rows = [p.chosen_row() for p in pairs] + [p.rejected_row() for p in pairs]
    home = next(model.parameters()).device
    if torch.cuda.is_available() and home.type == "cpu":  # a GPU machine runs the reference pass on its GPU
        model.to("cuda")
    try:
        with torch.inference_mode():
            logps = sequence_logps(model, rows, pad_id, limit=limit, chunk_tokens=chunk_tokens).tolist()
    finally:
        model.to(home)
    n = len(pairs)
    return logps[:n], logps[n:]


def to_parquet(pairs: list[PreferencePair], chosen: list[float], rejected: list[float], key: str) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {"row_id": [p.row_id for p in pairs], "ref_chosen_logp": chosen, "ref_rejected_logp": rejected},
        schema=pa.schema(
            [("row_id", pa.string()), ("ref_chosen_logp", pa.float64()), ("ref_rejected_logp", pa.float64())],
            metadata={"earmark.reference_key": key, "earmark.sidecar_version": str(SIDECAR_VERSION)},
        ),
    )
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def from_parquet(data: bytes) -> dict[str, tuple[float, float]]:
    import pyarrow.parquet as pq

    t = pq.read_table(io.BytesIO(data)).to_pydict()
    return {r: (c, j) for r, c, j in zip(t["row_id"], t["ref_chosen_logp"], t["ref_rejected_logp"], strict=True)}


def ensure(
    em: Earmark,
    training: Any,
    run_id: int,
    pairs: list[PreferencePair],
    model: Any,
    pad_id: int,
    *,
    key: str,
    limit: int | None,
    threads: int = 1,
) -> tuple[list[float], list[float], dict[str, Any]]:
    """Reuse the sidecar recorded under ``key`` if it covers every pair, else compute and store it.

    Records ``reference_logps`` {key, sha256, rows, reused, seconds} in the run summary either way.
    """
    t0 = time.perf_counter()
    found = training.find_reference_logps(key)
    if found:
        try:
            table = from_parquet(em.blobs.read(found["sha256"]))
        except Exception:  # noqa: BLE001 - a missing or unreadable blob just means: compute again
            table = {}
        if all(p.row_id in table for p in pairs):
            info = {
                "key": key,
                "sha256": found["sha256"],
                "rows": len(pairs),
                "reused": True,
                "seconds": round(time.perf_counter() - t0, 3),
            }
            training.update_summary(run_id, reference_logps=info)
            return [table[p.row_id][0] for p in pairs], [table[p.row_id][1] for p in pairs], info
    chosen, rejected = compute(model, pairs, pad_id, limit=limit, threads=threads)
    blob = em.blobs.put_file(to_parquet(pairs, chosen, rejected, key), SIDECAR_MIME)
    info = {
        "key": key,
        "sha256": blob.sha256,
        "rows": len(pairs),
        "reused": False,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    training.update_summary(run_id, reference_logps=info)
    return chosen, rejected, info
