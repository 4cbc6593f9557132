"""Stable customer keys: a customer seen before keeps its key whatever a new load brings.

Each resolved component takes the key its records already had. When a new link joins
customers that had different keys, the oldest key survives and the others are recorded in
core.customer_key_merges (never silently rewritten); when a customer's records are pulled
apart, the key stays with the part holding most of them. A customer never seen before gets
'C' + 16 hex digits of a hash of its first record's id: pseudonymous, and the same on a
rebuild from scratch.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import pandas as pd


def new_key(anchor: str, taken: set[str]) -> str:
    salt = 0
    while True:
        digest = hashlib.sha256(f"{anchor}#{salt}".encode()).hexdigest()[:16]
        key = f"C{digest.upper()}"
        if key not in taken:
            return key
        salt += 1


def assign_keys(
    resolved: pd.DataFrame, previous: pd.DataFrame, now: datetime
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keys for resolved records, given the previous crosswalk.

    resolved: source, source_id, component, ... ; previous: source, source_id, customer_key,
    key_since. Returns (resolved with customer_key and key_since, merges: retired_key,
    surviving_key, merged_at).
    """
    had = resolved.merge(
        previous[["source", "source_id", "customer_key", "key_since"]],
        on=["source", "source_id"],
        how="left",
    )
    claims = (
        had.dropna(subset=["customer_key"])
        .groupby(["component", "customer_key"], as_index=False)
        .agg(records=("source_id", "size"), key_since=("key_since", "min"))
    )
    # A key claimed by several components (a split) stays with the biggest part.
    claims = claims.sort_values(
        ["customer_key", "records", "component"], ascending=[True, False, True]
    )
    claims = claims.drop_duplicates("customer_key", keep="first")
    # A component holding several keys (a merge) keeps the oldest.
    claims = claims.sort_values(["component", "key_since", "customer_key"])
    survivors = claims.drop_duplicates("component", keep="first")
    retired = claims[claims.duplicated("component", keep="first")].merge(
        survivors[["component", "customer_key"]], on="component", suffixes=("", "_surviving")
    )
    merges = pd.DataFrame(
        {
            "retired_key": retired["customer_key"].to_numpy(),
            "surviving_key": retired["customer_key_surviving"].to_numpy(),
            "merged_at": now,
        }
    )
    keys = dict(zip(survivors["component"], survivors["customer_key"], strict=True))
    since = dict(zip(survivors["component"], survivors["key_since"], strict=True))
    taken = set(previous["customer_key"]) | set(keys.values())
    anchors = (
        resolved.assign(anchor=resolved["source"] + ":" + resolved["source_id"].astype(str))
        .groupby("component")["anchor"]
        .min()
    )
    for component, anchor in anchors.items():
        if component not in keys:
            key = new_key(anchor, taken)
            taken.add(key)
            keys[component] = key
            since[component] = now
    out = resolved.copy()
    out["customer_key"] = out["component"].map(keys)
    out["key_since"] = pd.to_datetime(out["component"].map(since))
    return out, merges
