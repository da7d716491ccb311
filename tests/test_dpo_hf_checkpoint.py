"""DPO pointed at an outside HF checkpoint: text pairs, LoRA adapters as policy versions, eval-only.

The checkpoint is a tiny Qwen2 built from a config and saved as a plain HF folder; the pairs are
text (tokenized by earmark with the model's tokenizer), the run trains LoRA adapters, registers
them as the next policy version (an adapter folder that loads through the hf policy adapter), and
an eval-only run against the base as reference reports TRL's metrics without registering anything.
"""

from __future__ import annotations

import json
import random

import pytest

pytest.importorskip("peft")

from hf_fixtures import save_tiny_qwen2

from earmark.services.training import TrainingService
from pipelines.training.config import DPOConfig
from pipelines.training.data import PreferencePair, step_plan, truncate_pair
from pipelines.training.dpo_job import run_dpo

WORDS = ["quiet", "room", "book", "tea", "rain", "walk", "plant", "light", "music", "bread", "river", "stone"]


@pytest.fixture(scope="module")
def hf_dir(checkpoint, tmp_path_factory):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(checkpoint, local_files_only=True)
    return save_tiny_qwen2(tmp_path_factory.mktemp("hf") / "tiny-qwen2", tok)


def _text_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = " ".join(rng.sample(WORDS, 3))
        rows.append(
            {
                "row_id": f"r{i}",
                "prompt": f"Tell me about {topic}.",
                "chosen": f"Gladly: {topic}, calm and slow.",
                "rejected": f"No. {topic}!",
                "prompt_external_id": f"p{i}",
            }
        )
    return rows


def test_sampler_never_repeats_a_pair_within_an_epoch() -> None:
    plan = step_plan(10, 4, 2, None, seed=3)
    assert [len(s) for s in plan] == [4, 4, 2, 4, 4, 2]  # the short last batch stays short
    for epoch in (plan[:3], plan[3:]):
        seen = [i for s in epoch for i in s]
        assert sorted(seen) == list(range(10))
    assert [len(s) for s in step_plan(9, 4, 1, None, 0, min_batch=2)] == [4, 4]  # a remainder no rank can share


def test_truncation_modes() -> None:
    p = PreferencePair("r", list(range(10)), list(range(100, 108)), list(range(200, 204)))
    start = truncate_pair(p, 14, None, "keep_start")
    assert start.prompt == p.prompt and start.chosen == p.chosen[:4] and start.rejected == p.rejected
    end = truncate_pair(p, 14, None, "keep_end")
    assert end.prompt == p.prompt[-6:] and end.chosen == p.chosen and end.rejected == p.rejected
    assert truncate_pair(p, None, 3).prompt == [7, 8, 9]
    with pytest.raises(ValueError, match="max_prompt_length"):
        truncate_pair(p, 8, None, "keep_start")


def test_lora_dpo_on_text_pairs_registers_adapter_and_eval_only(em, hf_dir) -> None:
    cfg = DPOConfig(
        model=str(hf_dir),
        use_peft=True,
        lora_r=8,
        lr=2e-3,  # LoRA on a random tiny model: a high rate so a few steps move it
        lr_scheduler_type="constant",
        epochs=4,
        batch_size=8,
        eval_fraction=0.25,
        checkpoint_every=0,
        threads=1,
        output_name="tiny-qwen2",
    )
    res = run_dpo(em, cfg, rows=_text_rows(40, 0), progress=False)
    s = res.summary
    print(
        f"\nLoRA DPO on text pairs: held-out accuracy {s['heldout_before']['accuracy']:.3f} -> "
        f"{s['heldout_after']['accuracy']:.3f} ({s['heldout_after']['pairs']} pairs), {s['tokens_per_s']:.0f} tok/s"
    )
    assert s["heldout_before"]["accuracy"] == 0.5 and s["heldout_after"]["accuracy"] >= 0.8
    assert res.metrics[-1]["rewards/accuracies"] > 0.5 and "logps/chosen" in res.metrics[-1]
    # registered as v1 of the checkpoint's policy: an adapter folder pointing at the base weights
    assert res.policy.name == "tiny-qwen2" and res.policy.version == 1 and res.policy.kind == "hf"
    adapter = json.loads((res.path / "adapter_config.json").read_text())
    assert not (res.path / "config.json").exists() and adapter["base_model_name_or_path"] == str(hf_dir.resolve())
    # eval-only on the new version, reference = the base checkpoint: TRL's metrics, no new policy
    n_policies = len(em.catalog.policies())
    ev = run_dpo(
        em,
        DPOConfig(eval_only=True, lr=0, ref_model=str(hf_dir), threads=1),
        rows=_text_rows(12, 1),
        base_policy=res.policy,
        progress=False,
    )
    metrics = ev.summary["eval"]
    assert ev.policy is None and len(em.catalog.policies()) == n_policies
    assert metrics["rewards/accuracies"] >= 0.8 and metrics["rewards/margins"] > 0
    assert metrics["loss"] < 0.69 and metrics["logps/chosen"] < 0
    assert TrainingService(em.ctx).get(ev.run_id).status == "succeeded"
    # merged export: full weights, no adapter
    merged = run_dpo(em, cfg.model_copy(update={"merge_on_export": True, "epochs": 1}), rows=_text_rows(16, 2))
    assert (merged.path / "config.json").is_file() and not (merged.path / "adapter_config.json").exists()


def test_bad_model_path_names_the_fix(em, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="local HF cache"):
        run_dpo(em, DPOConfig(model=str(tmp_path / "nope")), rows=_text_rows(4, 0), progress=False)
    with pytest.raises(ValueError, match="eval_only"):
        DPOConfig(lr=0)
