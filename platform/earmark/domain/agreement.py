"""Inter-rater agreement: the one Krippendorff's alpha (the ``krippendorff`` package), used by the
rater-quality service and the rater-drift report alike, with one table of measurement levels and
value domains. Values are returned unrounded; displays round."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from earmark.domain.annotation import RATING_DIMENSIONS

# Krippendorff's level of measurement of each rated quantity.
LEVELS: dict[str, str] = {
    "choice": "nominal",
    "preference": "ordinal",
    "cmos": "ordinal",
    "mos": "ordinal",
    "mushra": "interval",
    **{d: "ordinal" for d in RATING_DIMENSIONS},
}
# The full value domain where it is fixed, so an unused category still counts in ordinal distances.
DOMAINS: dict[str, list[float]] = {
    "mos": [1, 2, 3, 4, 5],
    "cmos": [-3, -2, -1, 0, 1, 2, 3],
    "choice": [0, 1, 2, 3],
    **{d: [1, 2, 3, 4, 5] for d in RATING_DIMENSIONS},
}


def krippendorff_alpha(
    dimension: str,
    *,
    reliability_data: np.ndarray | None = None,
    value_counts: np.ndarray | None = None,
    value_domain: list[float] | None = None,
) -> float | None:
    """Alpha of one dimension from a raters x units matrix (NaN = missing) or a units x values count
    matrix (columns = ``value_domain``, or the dimension's fixed domain). None when undefined: fewer
    than two pairable values, or one value everywhere (no variation to agree on)."""
    import krippendorff

    kw: dict[str, Any] = {"level_of_measurement": LEVELS.get(dimension, "ordinal")}
    domain = value_domain if value_domain is not None else DOMAINS.get(dimension)
    if domain is not None:
        kw["value_domain"] = domain
    try:
        with np.errstate(divide="ignore", invalid="ignore"):
            if value_counts is not None:
                a = float(krippendorff.alpha(value_counts=value_counts, **kw))
            else:
                a = float(krippendorff.alpha(reliability_data=reliability_data, **kw))
    except (ValueError, ZeroDivisionError):
        return None
    return None if math.isnan(a) or math.isinf(a) else a
