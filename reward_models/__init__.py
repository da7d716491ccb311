"""earmark reward models: scorers (acoustic, verifiable, generative, learned), composition, evaluation.

Importing this package is cheap (no torch): heavy scorers load on ``build_scorer`` or on import
of their module.
"""

from reward_models.base import (
    REGIMES,
    Scorer,
    ScoreResult,
    ScoringInput,
    build_scorer,
    list_scorers,
    register,
)
from reward_models.composition import ComposedReward, RegimeWeights, RewardComposition

__all__ = [
    "REGIMES",
    "ComposedReward",
    "RegimeWeights",
    "RewardComposition",
    "ScoreResult",
    "Scorer",
    "ScoringInput",
    "build_scorer",
    "list_scorers",
    "register",
]
