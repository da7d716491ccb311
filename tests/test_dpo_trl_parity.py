"""Loss, gradient and metric parity with TRL's DPOTrainer on an outside HF checkpoint, fp32.

A tiny Qwen2 is built from a config here and saved as an ordinary HF folder (the policy), next to a
second, differently initialised one (a separate reference model). TRL runs the reference itself
(``ref_model=``, no precomputation); earmark computes the reference log-probs once with
``sequence_logps`` (as its precomputed sidecar does) and the policy's through ``SequenceScorer``.
For every loss type (sigmoid, ipo, hinge, robust with label smoothing, and sigmoid + RPO's NLL
term, which TRL 1.x spells ``loss_type=["sigmoid", "sft"]``) the loss and every parameter
gradient must agree, and ``evaluate``'s TRL-named metrics must equal TRL's logged ones.
"""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from hf_fixtures import tiny_qwen2

from pipelines.training.data import PreferencePair
from pipelines.training.dpo import evaluate
from pipelines.training.losses import preference_loss
from pipelines.training.sequences import SequenceScorer, pack, sequence_logps
from pipelines.training.worker import load_lm

TOL = 1e-5
EPS = 0.1  # label smoothing of the robust loss
RPO_ALPHA = 0.5


def _tiny_qwen2(vocab: int, seed: int):
    return tiny_qwen2(vocab, seed=seed, tie_word_embeddings=False, attn_implementation="sdpa")


@pytest.fixture(scope="module")
def setup(checkpoint, tmp_path_factory):
    from transformers import AutoTokenizer

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("parity")
    tok = AutoTokenizer.from_pretrained(checkpoint, local_files_only=True)
    vocab = len(tok)
    for name, seed in (("policy", 1), ("ref", 2)):  # two outside HF checkpoints
        _tiny_qwen2(vocab, seed).save_pretrained(root / name)
        tok.save_pretrained(root / name)
    g = torch.Generator().manual_seed(0)
    pad = tok.pad_token_id
    low = max(i for i in (pad, tok.eos_token_id, 3) if i is not None) + 1

    def ids(n: int) -> list[int]:
        return torch.randint(low, vocab, (n,), generator=g).tolist()

    examples = [
        {"prompt_ids": ids(5 + 3 * i), "chosen_ids": ids(4 + 2 * i), "rejected_ids": ids(9 - i)} for i in range(6)
    ]
    return root, tok, examples, int(pad)


def _trl(root, tok, examples, out_dir, loss_type: str, beta: float):
    from trl import DPOConfig, DPOTrainer

    kinds, weights = ([loss_type], None) if loss_type != "rpo" else (["sigmoid", "sft"], [1.0, RPO_ALPHA])
    args = DPOConfig(
        output_dir=str(out_dir),
        beta=beta,
        loss_type=kinds,
        loss_weights=weights,
        label_smoothing=EPS if loss_type == "robust" else 0.0,
        per_device_train_batch_size=len(examples),
        report_to=[],
        use_cpu=True,
        bf16=False,
        max_length=None,
        activation_checkpointing=False,
        save_strategy="no",
        dataloader_num_workers=0,
    )
    conv = {"prompt": ["hi"] * 2, "chosen": ["hello"] * 2, "rejected": ["go away"] * 2}
    trainer = DPOTrainer(
        model=load_lm(root / "policy"),
        ref_model=load_lm(root / "ref"),
        args=args,
        train_dataset=datasets.Dataset.from_dict(conv),
        processing_class=tok,
    )
    assert not trainer.precompute_ref_logps  # TRL runs the separate reference itself
    batch = trainer.data_collator([dict(e) for e in examples])
    trainer.model.train()
    loss = trainer._compute_loss(trainer.model, batch, False)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items() if k.startswith(("rewards/", "logps/"))}
    return loss.item(), grads, metrics


def _earmark(root, examples, pad_id: int, loss_type: str, beta: float):
    rows = [(e["prompt_ids"], e["chosen_ids"]) for e in examples] + [
        (e["prompt_ids"], e["rejected_ids"]) for e in examples
    ]
    n = len(examples)
    ref = sequence_logps(load_lm(root / "ref"), rows, pad_id).float()  # the precomputed reference pass
    model = load_lm(root / "policy")
    model.train()
    batch = pack(rows, pad_id, chunk_tokens=96)  # several chunks: the split must not change the result
    assert len(batch.chunks) > 1
    seq = SequenceScorer(model)(batch.chunks, batch.n_rows)["seq_logps"]
    lengths = batch.response_lengths.float()
    res = preference_loss(
        seq[:n],
        seq[n:],
        ref[:n],
        ref[n:],
        beta=beta,
        loss_type="sigmoid" if loss_type == "rpo" else loss_type,  # type: ignore[arg-type]
        label_smoothing=EPS if loss_type == "robust" else 0.0,
        chosen_lengths=lengths[:n],
        rejected_lengths=lengths[n:],
    )
    loss = res.loss()
    if loss_type == "rpo":  # as the worker adds it: token-mean NLL of the chosen responses
        loss = loss - RPO_ALPHA * seq[:n].sum() / lengths[:n].sum()
    loss.backward()
    grads = {n_: p.grad.detach().clone() for n_, p in model.named_parameters() if p.grad is not None}
    pairs = [
        PreferencePair(str(i), e["prompt_ids"], e["chosen_ids"], e["rejected_ids"]) for i, e in enumerate(examples)
    ]
    metrics = evaluate(
        copy.deepcopy(model),
        pairs,
        ref[:n].tolist(),
        ref[n:].tolist(),
        pad_id,
        beta,
        loss_type="sigmoid" if loss_type == "rpo" else loss_type,
        label_smoothing=EPS if loss_type == "robust" else 0.0,
        rpo_alpha=RPO_ALPHA if loss_type == "rpo" else None,
    )
    return loss.item(), grads, metrics


@pytest.mark.parametrize(
    "loss_type,beta", [("sigmoid", 0.1), ("ipo", 0.1), ("hinge", 0.5), ("robust", 0.1), ("rpo", 0.1)]
)
def test_loss_gradients_and_metrics_match_trl(setup, tmp_path, loss_type: str, beta: float) -> None:
    root, tok, examples, pad_id = setup
    trl_loss, trl_grads, trl_metrics = _trl(root, tok, examples, tmp_path, loss_type, beta)
    em_loss, em_grads, em_metrics = _earmark(root, examples, pad_id, loss_type, beta)
    print(f"\n{loss_type}: loss TRL {trl_loss:.6f} earmark {em_loss:.6f}", end=" ")
    assert abs(trl_loss - em_loss) < TOL, (trl_loss, em_loss)
    assert set(trl_grads) == set(em_grads) and len(em_grads) > 10
    worst = max((trl_grads[n] - em_grads[n]).abs().max().item() for n in em_grads)
    scale = max(g.abs().max().item() for g in em_grads.values())
    print(f"max |grad diff| {worst:.1e} (largest gradient {scale:.1e})")
    assert worst < TOL and scale > 100 * TOL
    # evaluate() reports TRL's metric names with TRL's values (and the loss TRL optimises)
    assert {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins"} <= set(trl_metrics)
    for k, v in trl_metrics.items():
        assert em_metrics[k] == pytest.approx(v, abs=1e-4), k
    assert em_metrics["loss"] == pytest.approx(trl_loss, abs=1e-4)
