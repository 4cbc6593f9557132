"""The BG/NBD holdout check: is the purchase model right about the future?

The model is fitted again on a calibration period that ends `holdout` days before the as-of
day, on the customers who had bought by then, and asked how many repeat purchase days each of
them makes in the holdout period that follows. The answer is compared with what they did, in
total and by calibration repeat count (Fader, Hardie & Lee 2005, figure 3: the mean predicted
against the mean actual purchases for customers with 0, 1, ..., 7+ repeat purchases).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from crm_pipeline.analytics.clv import BgNbdFit, expected_purchases, fit_bgnbd

TOP_BUCKET = 7


def holdout_check(
    calibration: pd.DataFrame, actual: pd.Series, holdout_weeks: float
) -> tuple[BgNbdFit, dict]:
    """Fit on `calibration` (x, t_x, T in weeks, as of the cut-off) and compare predicted with
    `actual` purchase days in the next `holdout_weeks` (customers without any are absent).

    Returns the calibration fit and the figures: customers, predicted and actual totals, the
    error of the total in percent, the mean absolute error per customer, and predicted against
    actual means by calibration repeat count (0 .. 6 and 7+).
    """
    x, t_x, T = (calibration[c].to_numpy(float) for c in ("x", "t_x", "T"))
    fit = fit_bgnbd(x, t_x, T)
    predicted = expected_purchases(fit, holdout_weeks, x, t_x, T)
    observed = actual.reindex(calibration.index, fill_value=0).to_numpy(float)
    buckets = np.minimum(x, TOP_BUCKET).astype(int)
    by_repeats = (
        pd.DataFrame({"bucket": buckets, "predicted": predicted, "actual": observed})
        .groupby("bucket")
        .agg(
            customers=("actual", "size"),
            predicted=("predicted", "mean"),
            actual=("actual", "mean"),
        )
    )
    total_predicted, total_actual = float(predicted.sum()), float(observed.sum())
    figures = {
        "holdout_weeks": round(holdout_weeks, 4),
        "customers": len(observed),
        "predicted_purchases": round(total_predicted, 1),
        "actual_purchases": round(total_actual, 1),
        "error_pct": (
            round((total_predicted - total_actual) / total_actual * 100, 2)
            if total_actual
            else None
        ),
        "mae_per_customer": round(float(np.abs(predicted - observed).mean()), 4),
        "by_calibration_repeats": {
            (f"{bucket}+" if bucket == TOP_BUCKET else str(bucket)): {
                "customers": int(row.customers),
                "predicted": round(float(row.predicted), 3),
                "actual": round(float(row.actual), 3),
            }
            for bucket, row in by_repeats.iterrows()
        },
    }
    return fit, figures
