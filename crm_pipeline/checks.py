"""Pandera checks the contracts use beyond the built-in ones, and pandas' string dtype checked
once per column."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pandera import dtypes, extensions
from pandera.engines import pandas_engine


@extensions.register_check_method(statistics=["pattern"], supported_types=pd.Series)
def distinct_values_match(series: pd.Series, *, pattern: str) -> pd.Series:
    """Like str_matches, tested once per distinct value: a customer key repeats on each of a
    customer's rows (ten recommendations, every order line), and a regular expression over
    every row is most of a large table's validation time."""
    distinct = pd.Series(series.dropna().unique(), dtype=object)
    wrong = distinct[~distinct.astype(str).str.match(pattern)]
    return ~series.isin(wrong) if len(wrong) else pd.Series(True, index=series.index)


@pandas_engine.Engine.register_dtype(equivalents=pandas_engine._STRING_EQUIVALENTS)
@dtypes.immutable(init=True)
class WholeColumnString(pandas_engine.STRING):
    """pandas' string dtype (what `Series[str]` declares on pandas 3), its check answered once
    per column.

    pandera answers a column already of that dtype with one True per row, and its dtype check
    then builds an empty table of failure cases, and a message printing it, for each string
    column of each batch: a quarter of a large table's validation. One True for the column is
    the same verdict; any other answer (a column of objects, checked value by value) stands.
    """

    def check(
        self, pandera_dtype: dtypes.DataType, data_container: pd.Series | None = None
    ) -> bool | np.ndarray:
        verdict = super().check(pandera_dtype, data_container)
        if isinstance(verdict, np.ndarray) and verdict.all():
            return True
        return verdict
