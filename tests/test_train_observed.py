"""Observed tokens inside a response (a duplex session's user turns) are context, never scored."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from pipelines.training.data import observed_spans
from pipelines.training.sequences import SequenceScorer, pack, sequence_logps


@pytest.fixture(scope="module")
def lm() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(cfg).eval()


def test_skipped_spans_drop_exactly_their_tokens_from_the_sum(lm: LlamaForCausalLM) -> None:
    prompt, resp = [1, 2, 3], [4, 5, 6, 7, 8, 9, 10]
    batch = pack([(prompt, resp)], pad_id=0)
    with torch.inference_mode():
        per_token = SequenceScorer(lm)(batch.chunks, 1)["token_logps"].double()
    full = sequence_logps(lm, [(prompt, resp)], 0)[0]
    masked = sequence_logps(lm, [(prompt, resp, ((1, 3), (5, 6)))], 0)[0]
    assert torch.isclose(full, per_token.sum())
    want = per_token.sum() - per_token[1] - per_token[2] - per_token[5]
    assert torch.isclose(masked, want, atol=1e-6), (float(masked), float(want))
    assert pack([(prompt, resp, ((1, 3), (5, 6)))], 0).response_lengths.tolist() == [4]


def test_observed_tokens_stay_in_the_context(lm: LlamaForCausalLM) -> None:
    # Changing an observed token changes the scores of the chosen tokens after it.
    a = sequence_logps(lm, [([1, 2], [4, 5, 6], ((1, 2),))], 0)[0]
    b = sequence_logps(lm, [([1, 2], [4, 9, 6], ((1, 2),))], 0)[0]
    assert not torch.isclose(a, b)


def test_a_row_with_nothing_left_to_score_is_refused() -> None:
    with pytest.raises(ValueError, match="nothing the policy chose"):
        pack([([1], [4, 5], ((0, 2),))], 0)


def test_observed_spans_read_from_the_snapshot_timeline() -> None:
    tl = {"n_chunks": 3, "meta": {"duplex": {"observation_spans": [[0, 4], [9, 12]]}}}
    assert observed_spans(json.dumps(tl)) == ((0, 4), (9, 12))
    assert observed_spans(tl) == ((0, 4), (9, 12))
    assert observed_spans(None) == () and observed_spans({"n_chunks": 2}) == ()
    with pytest.raises(ValueError, match="token range"):
        observed_spans({"meta": {"duplex": {"observation_spans": [[5, 2]]}}})
