"""Acoustic prosody scorer: features measured on the response audio, matched to persona targets.

Features come from Praat (praat-parselmouth): an autocorrelation pitch track and an intensity
contour, both at 10 ms. Speaking rate counts syllable nuclei as intensity peaks that are voiced
and separated by a dip (de Jong & Wempe 2009, "Praat script to detect syllable nuclei"), or uses
words/s when a transcript is given. No weights, ~400x real time on one CPU core.

The score is a weighted mean of per-feature Gaussian similarities exp(-d^2/2) where d is the
distance to the persona's target in units of a tolerance; pitch is compared in semitones and
rates as log ratios because listeners hear both on a ratio scale.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from earmark.audio import resample
from reward_models.base import Scorer, ScoreResult, ScoringInput, register

# Praat settings: a 60-400 Hz pitch range covers adult voices (eSpeak pitch 20..80 is ~75..140 Hz).
PITCH_FLOOR_HZ = 60.0
PITCH_CEILING_HZ = 400.0
FRAME_S = 0.01
SILENCE_DB_BELOW_PEAK = 25.0  # de Jong & Wempe's silence threshold relative to the 0.99 quantile
MIN_DIP_DB = 2.0  # a syllable boundary needs an intensity dip this deep between two peaks
MIN_PAUSE_S = 0.1  # shorter silences are stop closures, not pauses
SYLLABLES_PER_WORD = 1.4  # English running speech; used only when no transcript is given
MIN_AUDIO_S = 0.1
ANALYSIS_SR = 8000

# Tolerance per target: one tolerance away scores exp(-0.5) ~ 0.61. Scale says how d is measured.
DEFAULT_TOLERANCES: dict[str, tuple[str, float]] = {
    "f0_mean_hz": ("semitones", 2.0),
    "f0_std_hz": ("log_ratio", math.log(1.6)),
    "f0_range_hz": ("log_ratio", math.log(1.6)),
    "rate_wps": ("log_ratio", math.log(1.25)),
    "syllable_rate_sps": ("log_ratio", math.log(1.25)),
    "articulation_rate_sps": ("log_ratio", math.log(1.25)),
    "pause_ratio": ("absolute", 0.10),
    "voiced_fraction": ("absolute", 0.15),
    "energy_std_db": ("absolute", 3.0),
}


def extract_prosody(audio: np.ndarray, sample_rate: int, transcript: str | None = None) -> dict[str, Any]:
    """Prosody features of one mono clip. Keys match the persona ``prosody`` target names."""
    import parselmouth

    a = np.asarray(audio, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError("audio is empty (0 samples); pass the rollout's decoded waveform")
    dur = a.size / float(sample_rate)
    if dur < MIN_AUDIO_S:
        raise ValueError(f"audio is {dur * 1000:.0f} ms long; prosody needs at least {MIN_AUDIO_S * 1000:.0f} ms")
    full = parselmouth.Sound(a, sampling_frequency=float(sample_rate))
    # Loudness on the full band: fricatives carry their energy above 4 kHz and would read as pauses.
    inten = full.to_intensity(minimum_pitch=100.0, time_step=FRAME_S)
    i_t = inten.xs()
    i_db = inten.values[0]
    low = full
    if sample_rate > ANALYSIS_SR:
        # Pitch lives below 4 kHz; tracking it at 8 kHz makes Praat ~25% faster and keeps F0
        # within 0.1 Hz of the full-band track (measured on eSpeak NG speech).
        low = parselmouth.Sound(resample(a, int(sample_rate), ANALYSIS_SR), sampling_frequency=ANALYSIS_SR)
    f0 = low.to_pitch_ac(time_step=FRAME_S, pitch_floor=PITCH_FLOOR_HZ, pitch_ceiling=PITCH_CEILING_HZ)
    f0_t = f0.xs()
    f0_hz = f0.selected_array["frequency"]

    voiced = f0_hz > 0
    out: dict[str, Any] = {"duration_s": round(dur, 3)}
    if voiced.any():
        v = f0_hz[voiced]
        semis = 12 * np.log2(v / np.median(v))
        out.update(
            f0_mean_hz=float(v.mean()),
            f0_std_hz=float(v.std()),
            f0_range_hz=float(np.percentile(v, 95) - np.percentile(v, 5)),
            f0_std_semitones=float(semis.std()),
        )
    else:
        out.update(f0_mean_hz=0.0, f0_std_hz=0.0, f0_range_hz=0.0, f0_std_semitones=0.0)

    if i_db.size == 0:  # clip shorter than Praat's intensity window
        out.update(
            voiced_fraction=0.0,
            pause_ratio=1.0,
            energy_std_db=0.0,
            syllables=0,
            syllable_rate_sps=0.0,
            articulation_rate_sps=0.0,
            rate_wps=0.0,
            rate_wps_source="none",
        )
        return out

    peak = float(np.quantile(i_db, 0.99))
    silence_thr = peak - SILENCE_DB_BELOW_PEAK
    sounding = i_db > silence_thr
    if not sounding.any():
        sounding[:] = True
    first, last = int(np.argmax(sounding)), int(len(sounding) - 1 - np.argmax(sounding[::-1]))
    span = sounding[first : last + 1]
    span_s = max((last - first + 1) * FRAME_S, FRAME_S)
    pauses = _long_runs(~span, int(round(MIN_PAUSE_S / FRAME_S)))
    pause_frames = int(sum(n for _, n in pauses))

    # Voicing over the sounding span only: leading/trailing silence would otherwise dominate.
    in_span = (f0_t >= i_t[first] - FRAME_S / 2) & (f0_t <= i_t[last] + FRAME_S / 2)
    out["voiced_fraction"] = float(voiced[in_span].mean()) if in_span.any() else 0.0
    out["pause_ratio"] = pause_frames / len(span)
    out["pause_count"] = len(pauses)
    out["energy_std_db"] = float(i_db[first : last + 1][span].std())

    n_syl = _syllable_nuclei(i_db, i_t, f0_t, voiced, max(silence_thr, float(np.median(i_db[sounding]))) - 2.0)
    phonation_s = max(span_s - pause_frames * FRAME_S, FRAME_S)
    out["syllables"] = n_syl
    out["syllable_rate_sps"] = n_syl / span_s
    out["articulation_rate_sps"] = n_syl / phonation_s
    words = len(transcript.split()) if transcript and transcript.strip() else 0
    if words:
        out["rate_wps"], out["rate_wps_source"] = words / span_s, "transcript"
    else:
        out["rate_wps"], out["rate_wps_source"] = n_syl / span_s / SYLLABLES_PER_WORD, "syllable_estimate"
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def _long_runs(mask: np.ndarray, min_len: int) -> list[tuple[int, int]]:
    """(start, length) of runs of True at least ``min_len`` long."""
    if not mask.any():
        return []
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    return [(int(s), int(e - s)) for s, e in zip(starts, ends) if e - s >= min_len]


def _syllable_nuclei(i_db: np.ndarray, i_t: np.ndarray, f0_t: np.ndarray, voiced: np.ndarray, thr: float) -> int:
    """Count voiced intensity peaks above ``thr`` separated by dips of >= MIN_DIP_DB."""
    if i_db.size < 3:
        return 0
    mid = i_db[1:-1]
    is_peak = (mid > i_db[:-2]) & (mid >= i_db[2:]) & (mid > thr)
    idx = np.flatnonzero(is_peak) + 1
    if idx.size == 0 or f0_t.size == 0:
        return 0
    # keep peaks whose nearest pitch frame is voiced
    j = np.clip(np.searchsorted(f0_t, i_t[idx]), 0, f0_t.size - 1)
    idx = idx[voiced[j]]
    kept: list[int] = []
    for k in idx:
        if kept:
            prev = kept[-1]
            dip = float(i_db[prev : k + 1].min())
            if min(i_db[prev], i_db[k]) - dip < MIN_DIP_DB:
                if i_db[k] > i_db[prev]:  # same syllable: keep the louder peak
                    kept[-1] = int(k)
                continue
        kept.append(int(k))
    return len(kept)


def feature_similarity(name: str, value: float, target: float, tolerance: tuple[str, float]) -> float:
    scale, tol = tolerance
    if scale == "semitones" or scale == "log_ratio":
        if value <= 0 or target <= 0:
            return 0.0
        d = math.log(value / target)
        d = 12 * d / math.log(2) if scale == "semitones" else d
    else:
        d = value - target
    return math.exp(-0.5 * (d / tol) ** 2)


def summarize_prosody(features: dict[str, Any]) -> str:
    """One line a text judge can read (the judge never hears the audio)."""
    if not features:
        return "no audio (text-only response)"
    parts = []
    if features.get("f0_mean_hz"):
        parts.append(
            f"mean pitch {features['f0_mean_hz']:.0f} Hz (spread {features.get('f0_std_semitones', 0):.1f} st)"
        )
    if "rate_wps" in features:
        parts.append(f"speaking rate {features['rate_wps']:.1f} words/s")
    if "pause_ratio" in features:
        parts.append(f"pauses {100 * features['pause_ratio']:.0f}% of the time")
    if "energy_std_db" in features:
        parts.append(f"loudness variation {features['energy_std_db']:.1f} dB")
    if "duration_s" in features:
        parts.append(f"duration {features['duration_s']:.1f} s")
    return ", ".join(parts)


@register("prosody")
class ProsodyScorer(Scorer):
    """Dimension ``prosody_match``: how close the measured prosody is to the persona's targets.

    With no targets (persona lacks ``prosody`` and config ``default_targets`` is empty) the score
    is a neutral 0.5 and ``features['targets_used']`` is empty, so composition can skip it.
    """

    kind = "acoustic"
    dimensions = ("prosody_match",)
    code_version = "1"
    default_config: ClassVar[dict[str, Any]] = {
        "tolerances": {},  # name -> [scale, tolerance], overrides DEFAULT_TOLERANCES
        "weights": {},  # name -> weight (default 1 for every target present)
        "default_targets": {},  # used when the persona has no prosody targets
        "use_transcript_for_rate": True,
    }

    def _tolerance(self, name: str) -> tuple[str, float] | None:
        t = self.config["tolerances"].get(name)
        return (str(t[0]), float(t[1])) if t else DEFAULT_TOLERANCES.get(name)

    def score_one(self, item: ScoringInput) -> list[ScoreResult]:
        if item.audio is None or item.sample_rate is None:
            raise ValueError(
                f"prosody scorer needs audio (rollout {item.rollout_id}); render the response or skip this scorer"
            )
        transcript = item.response_text if self.config["use_transcript_for_rate"] else None
        feats = extract_prosody(item.audio, item.sample_rate, transcript)
        targets = item.prosody_targets or dict(self.config["default_targets"])
        sims: dict[str, float] = {}
        unknown = []
        for name, target in targets.items():
            tol = self._tolerance(name)
            if tol is None or name not in feats:
                unknown.append(name)
                continue
            sims[name] = feature_similarity(name, float(feats[name]), float(target), tol)
        feats = {**feats, "targets_used": sorted(sims), "similarity": {k: round(v, 4) for k, v in sims.items()}}
        if unknown:
            feats["targets_ignored"] = sorted(unknown)
        if not sims:
            return [
                ScoreResult(
                    dimension="prosody_match",
                    score=0.5,
                    features=feats,
                    rationale="no usable prosody targets; neutral 0.5. " + summarize_prosody(feats),
                )
            ]
        w = {k: float(self.config["weights"].get(k, 1.0)) for k in sims}
        total = sum(w.values()) or 1.0
        score = sum(sims[k] * w[k] for k in sims) / total
        worst = min(sims, key=sims.get)  # type: ignore[arg-type]
        rationale = (
            f"{summarize_prosody(feats)}. Targets: "
            + ", ".join(f"{k} {feats[k]:.2f} vs {targets[k]} (sim {sims[k]:.2f})" for k in sorted(sims))
            + f". Furthest: {worst}."
        )
        return [ScoreResult(dimension="prosody_match", score=float(score), rationale=rationale, features=feats)]
