"""Summary statistics of per-slice scores: median and IQR, one-sided Wilcoxon, the winners.

Conventions, stated once so that the report and the tests agree:
- Every metric here is "higher is better" (SSIM, PSNR, VIF).
- PSNR of a perfect reconstruction is +inf. Before any statistic, PSNR is
  capped at `PSNR_CAP_DB` (the same cap for every method), so medians stay
  finite and two exact reconstructions tie (difference 0) instead of giving
  inf - inf = nan. At float32 precision anything above ~100 dB is exact.
- NaN scores (e.g. VIF of an all-black slice) are left out; a pair is left out
  of the Wilcoxon test when either member is NaN, and the count is reported.
- "AE better than X" is `scipy.stats.wilcoxon(ae, x, alternative='greater')`
  with scipy's defaults: zero differences are discarded (zero_method='wilcox')
  and method='auto' (exact distribution for small samples without ties or
  zeros, normal approximation otherwise). When every difference is zero there
  is no evidence either way and p = 1.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from jaxsr.scores import AE, METRICS, PRIMARY, VARIANTS, ScoreTable

PSNR_CAP_DB = 100.0
DEFAULT_SIGNIFICANCE = 0.001  # the paper reports p << 0.001


def cap_scores(metric: str, values: np.ndarray) -> np.ndarray:
    """Float64 copy of `values`, with PSNR capped at PSNR_CAP_DB (see module doc)."""
    values = np.asarray(values, np.float64).copy()
    if metric == "psnr":
        values = np.minimum(values, PSNR_CAP_DB)
    return values


def median_iqr(values: np.ndarray) -> dict:
    """Median, 25th and 75th percentile (numpy's linear rule) of the finite-or-capped values.

    NaNs are ignored; `n` counts the values used. All None when nothing is left.
    """
    values = np.asarray(values, np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return {"median": None, "q25": None, "q75": None, "n": 0}
    q25, median, q75 = np.percentile(values, [25.0, 50.0, 75.0])
    return {"median": float(median), "q25": float(q25), "q75": float(q75), "n": int(values.size)}


def wilcoxon_greater(ae: np.ndarray, other: np.ndarray) -> dict:
    """One-sided Wilcoxon signed-rank test of "ae > other" on paired values.

    Returns p, the statistic, the number of pairs used, how many of them had a
    zero difference (discarded by scipy's default) and how many pairs were
    left out for NaN. p is None when no pair is left.
    """
    ae = np.asarray(ae, np.float64)
    other = np.asarray(other, np.float64)
    if ae.shape != other.shape:
        raise ValueError(f"paired samples differ in shape: {ae.shape} vs {other.shape}")
    keep = ~(np.isnan(ae) | np.isnan(other))
    ae, other = ae[keep], other[keep]
    diff = ae - other
    result = {
        "p": None,
        "statistic": None,
        "n_pairs": int(diff.size),
        "n_zero_differences": int(np.count_nonzero(diff == 0)),
        "n_nan_left_out": int(np.count_nonzero(~keep)),
        "median_difference": float(np.median(diff)) if diff.size else None,
    }
    if diff.size == 0:
        return result
    if np.all(diff == 0):
        result.update(p=1.0, statistic=0.0)
        return result
    with warnings.catch_warnings():
        # Few non-zero differences make scipy warn about the normal approximation; the p-value stands.
        warnings.simplefilter("ignore", UserWarning)
        res = scipy_stats.wilcoxon(ae, other, alternative="greater")
    result.update(p=float(res.pvalue), statistic=float(res.statistic))
    return result


def best_by_median(medians: dict[str, float | None]) -> list[str]:
    """Names with the highest median (several when tied); empty when none has a value."""
    valid = {k: v for k, v in medians.items() if v is not None and not np.isnan(v)}
    if not valid:
        return []
    top = max(valid.values())
    return [k for k, v in valid.items() if v == top]


def summarise(scores: ScoreTable, *, significance: float = DEFAULT_SIGNIFICANCE, reference: str = AE) -> dict:
    """Median/IQR per method and metric, one-sided Wilcoxon "reference better than X", winners.

    Per variant: {'methods': {m: {metric: {median, q25, q75, n}}},
    'n_identical': {m: slices returned identical to the original (PSNR +inf)},
    'wilcoxon': {baseline: {metric: {p, statistic, n_pairs, ...}}},
    'winners': {metric: {'best': [...], 'reference_wins': bool, 'significant_vs_all': bool, ...}}}.
    PSNR is capped at PSNR_CAP_DB first (see the module docstring). Pairs are
    matched on (volume, frame, slice); a slice missing for either method is left out.
    """
    summary: dict[str, Any] = {
        "reference": reference,
        "primary_variant": PRIMARY,
        "significance_level": significance,
        "psnr_cap_db": PSNR_CAP_DB,
        "metrics": list(METRICS),
        "variants": {},
    }
    for variant, description in VARIANTS.items():
        table = scores.select(variant=variant)
        if len(table) == 0:
            continue
        per_method = {m: table.select(method=m) for m in table.methods()}
        methods = {m: {metric: median_iqr(cap_scores(metric, t[metric])) for metric in METRICS} for m, t in per_method.items()}
        tests = _paired_tests(per_method, reference)
        summary["variants"][variant] = {
            "description": description,
            "n_slices": {m: len(t) for m, t in per_method.items()},
            "n_identical": {m: int(np.count_nonzero(np.isposinf(t["psnr"]))) for m, t in per_method.items()},
            "methods": methods,
            "wilcoxon": tests,
            "winners": {metric: _winners(methods, tests, metric, reference, significance) for metric in METRICS},
        }
    return summary


def _paired_tests(per_method: dict[str, ScoreTable], reference: str) -> dict[str, dict]:
    """{method: {metric: wilcoxon_greater(reference, method)}} on slices paired by key."""
    if reference not in per_method:
        return {}
    ref = per_method[reference]
    ref_index = {k: i for i, k in enumerate(ref.keys())}
    tests = {}
    for m, other in per_method.items():
        if m == reference:
            continue
        pairs = np.array([(ref_index[k], j) for j, k in enumerate(other.keys()) if k in ref_index], int).reshape(-1, 2)
        tests[m] = {
            metric: wilcoxon_greater(cap_scores(metric, ref[metric][pairs[:, 0]]), cap_scores(metric, other[metric][pairs[:, 1]]))
            for metric in METRICS
        }
    return tests


def _winners(methods: dict[str, dict], tests: dict[str, dict], metric: str, reference: str, significance: float) -> dict:
    medians = {m: stats[metric]["median"] for m, stats in methods.items()}
    best = best_by_median(medians)
    others = {m: v for m, v in medians.items() if m != reference and v is not None}
    best_other = max(others, key=others.get) if others else None
    ps = [tests[m][metric]["p"] for m in tests]
    return {
        "best": best,
        "reference_median": medians.get(reference),
        "best_other": best_other,
        "best_other_median": others.get(best_other),
        "reference_wins": best == [reference],
        "significant_vs_all": bool(ps) and all(p is not None and p < significance for p in ps),
        "max_p": max((p for p in ps if p is not None), default=None),
    }
