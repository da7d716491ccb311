"""Loss parity with TRL's DPOTrainer: same tiny model, same batch, same reference log-probs.

The model is the shipped offline policy (a 2.1M-parameter Llama), perturbed so that policy and
reference differ; the batch is real samples of that policy. TRL computes its loss through its
own collator and fused LM head (``DPOTrainer._compute_loss``); earmark through
``SequenceScorer`` + ``preference_loss``. Loss and every parameter gradient must agree.
"""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from pipelines.policy.base import SamplingParams
from pipelines.policy.offline.policy import OfflineSpeechPolicy
from pipelines.training.data import policy_token_info, response_ids
from pipelines.training.losses import preference_loss
from pipelines.training.sequences import SequenceScorer, pack, sequence_logps

TOL = 1e-5
PERSONA = {
    "role": "system",
    "content": "You are Mara, a calm librarian who loves quiet reading rooms. "
    "Speaks slowly and softly in a low voice, with thoughtful pauses between sentences.",
}
QUESTIONS = [
    "How can I fall asleep faster?",
    "What should I read next?",
    "How do I keep a plant alive?",
    "Any tips for a rainy day?",
]


@pytest.fixture(scope="module")
def setup(checkpoint, tmp_path_factory):
    torch.manual_seed(0)
    torch.set_num_threads(1)  # one thread: tests share the machine (OMP threads degrade badly when cores are busy)
    policy = OfflineSpeechPolicy.from_pretrained(checkpoint)
    convs = [[PERSONA, {"role": "user", "content": q}] for q in QUESTIONS]
    samples = policy.generate(
        convs, SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=48), num_samples=2, seed=3
    )
    end_id, stops, pad_id = policy_token_info(policy)
    examples = [
        {
            "prompt_ids": policy.prompt_ids(c),
            "chosen_ids": response_ids(s[0].token_ids, end_id, stops),
            "rejected_ids": response_ids(s[1].token_ids, end_id, stops),
        }
        for c, s in zip(convs, samples)
    ]
    ref = policy.model
    model = copy.deepcopy(ref)
    with torch.no_grad():  # a policy that already moved away from its reference
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    rows = [(e["prompt_ids"], e["chosen_ids"]) for e in examples] + [
        (e["prompt_ids"], e["rejected_ids"]) for e in examples
    ]
    ref_logps = sequence_logps(ref, rows, pad_id).float()
    n = len(examples)
    for i, e in enumerate(examples):
        e["ref_chosen_logps"], e["ref_rejected_logps"] = ref_logps[i].item(), ref_logps[n + i].item()
    return policy, model, examples, pad_id, tmp_path_factory.mktemp("trl")


def _trl_loss_and_grads(policy, model, examples, out_dir, loss_type: str, beta: float):
    from trl import DPOConfig, DPOTrainer

    trl_model = copy.deepcopy(model)
    args = DPOConfig(
        output_dir=str(out_dir),
        beta=beta,
        loss_type=[loss_type],
        per_device_train_batch_size=len(examples),
        report_to=[],
        use_cpu=True,
        max_length=None,
        activation_checkpointing=False,
        logging_steps=1,
        save_strategy="no",
        dataloader_num_workers=0,
    )
    conv = {
        "prompt": [[PERSONA, {"role": "user", "content": "hi"}]] * 2,
        "chosen": [[{"role": "assistant", "content": "hello"}]] * 2,
        "rejected": [[{"role": "assistant", "content": "go away"}]] * 2,
    }
    trainer = DPOTrainer(
        model=trl_model,
        ref_model=copy.deepcopy(policy.model),
        args=args,
        train_dataset=datasets.Dataset.from_dict(conv),
        processing_class=policy.tokenizer,
    )
    trainer.precompute_ref_logps = True  # use the reference log-probs carried in the batch, as earmark does
    batch = trainer.data_collator([dict(e) for e in examples])
    trainer.model.train()
    loss = trainer._compute_loss(trainer.model, batch, False)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.item(), grads


def _earmark_loss_and_grads(model, examples, pad_id, loss_type: str, beta: float):
    em_model = copy.deepcopy(model)
    em_model.train()
    scorer = SequenceScorer(em_model)
    rows = [(e["prompt_ids"], e["chosen_ids"]) for e in examples] + [
        (e["prompt_ids"], e["rejected_ids"]) for e in examples
    ]
    batch = pack(rows, pad_id, chunk_tokens=256)  # several chunks: the split must not change the result
    assert len(batch.chunks) > 1
    seq = scorer(batch.chunks, batch.n_rows)["seq_logps"]
    n = len(examples)
    lengths = batch.response_lengths.float()
    out = preference_loss(
        seq[:n],
        seq[n:],
        torch.tensor([e["ref_chosen_logps"] for e in examples]),
        torch.tensor([e["ref_rejected_logps"] for e in examples]),
        beta=beta,
        loss_type=loss_type,
        chosen_lengths=lengths[:n] if loss_type == "ipo" else None,
        rejected_lengths=lengths[n:] if loss_type == "ipo" else None,
    )
    loss = out.loss()
    loss.backward()
    grads = {f"{n}": p.grad.detach().clone() for n, p in em_model.named_parameters() if p.grad is not None}
    return loss.item(), grads


@pytest.mark.parametrize("loss_type,beta", [("sigmoid", 0.1), ("sigmoid", 0.5), ("ipo", 0.1)])
def test_dpo_loss_and_gradients_match_trl(setup, loss_type: str, beta: float) -> None:
    policy, model, examples, pad_id, out_dir = setup
    trl_loss, trl_grads = _trl_loss_and_grads(policy, model, examples, out_dir, loss_type, beta)
    em_loss, em_grads = _earmark_loss_and_grads(model, examples, pad_id, loss_type, beta)
    print(f"\n{loss_type} beta={beta}: loss TRL {trl_loss:.6f} earmark {em_loss:.6f}", end=" ")
    assert abs(trl_loss - em_loss) < TOL, (trl_loss, em_loss)
    assert set(trl_grads) == set(em_grads) and len(em_grads) > 10
    worst = max((trl_grads[n] - em_grads[n]).abs().max().item() for n in em_grads)
    scale = max(g.abs().max().item() for g in em_grads.values())
    print(f"|loss diff| {abs(trl_loss - em_loss):.1e}, max |grad diff| {worst:.1e} (largest gradient {scale:.1e})")
    assert worst < TOL, f"max |grad diff| {worst:.2e} (largest gradient {scale:.2e})"
    assert scale > 100 * TOL  # the comparison is not vacuous
