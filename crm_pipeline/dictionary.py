"""The data dictionary: every warehouse table, its grain and its columns, from the pandera contracts."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandera.pandas as pa

from crm_pipeline.analytics.schemas import ANALYTICS_MODELS
from crm_pipeline.core.schemas import CORE_MODELS, column_types, sql_type
from crm_pipeline.mining.schemas import MINING_MODELS
from crm_pipeline.privacy import ERASED_RECORDS, ERASED_RECORDS_COLUMNS, ERASURES, ERASURES_COLUMNS
from crm_pipeline.raw.schemas import (
    RAW_MODELS,
    ErasedRecords,
    Erasures,
    RawDeliveries,
    RawRecord,
    RawRejects,
)
from crm_pipeline.raw.tables import (
    DELIVERIES_COLUMNS,
    DELIVERIES_TABLE,
    REJECTS_COLUMNS,
    REJECTS_TABLE,
    raw_column_types,
    sql_types,
)
from crm_pipeline.reporting import personal_columns
from crm_pipeline.staging.build import (
    MERGED_COLUMNS,
    MERGED_TABLE,
    NULLED_COLUMNS,
    NULLED_TABLE,
    staging_columns,
)
from crm_pipeline.staging.build import REJECTS_COLUMNS as STAGING_REJECTS_COLUMNS
from crm_pipeline.staging.build import REJECTS_TABLE as STAGING_REJECTS_TABLE
from crm_pipeline.staging.lookups import CACHE_TABLE
from crm_pipeline.staging.rules import SOURCES
from crm_pipeline.staging.schemas import (
    STAGING_MODELS,
    MergedDuplicates,
    NormalisedValues,
    NulledValues,
    StagedWith,
    StagingRejects,
)
from crm_pipeline.staging.staged_with import STAGED_WITH_COLUMNS, STAGED_WITH_TABLE


def _raw_types(model: type[RawRecord]) -> list[tuple[str, str]]:
    lineage = RawRecord.to_schema().columns
    delivered = tuple(c for c in model.to_schema().columns if c not in lineage)
    return raw_column_types(delivered)


# Every table: its contract and its columns in warehouse order with their types.
TABLES: dict[str, tuple[type[pa.DataFrameModel], list[tuple[str, str]]]] = {
    **{f"raw.{table}": (model, _raw_types(model)) for table, model in RAW_MODELS.items()},
    DELIVERIES_TABLE: (RawDeliveries, sql_types(DELIVERIES_COLUMNS)),
    REJECTS_TABLE: (RawRejects, sql_types(REJECTS_COLUMNS)),
    ERASED_RECORDS: (ErasedRecords, sql_types(ERASED_RECORDS_COLUMNS)),
    ERASURES: (Erasures, sql_types(ERASURES_COLUMNS)),
    **{
        f"staging.{name}": (model, sql_types(staging_columns(SOURCES[name])))
        for name, model in STAGING_MODELS.items()
    },
    STAGING_REJECTS_TABLE: (StagingRejects, sql_types(STAGING_REJECTS_COLUMNS)),
    MERGED_TABLE: (MergedDuplicates, sql_types(MERGED_COLUMNS)),
    NULLED_TABLE: (NulledValues, sql_types(NULLED_COLUMNS)),
    STAGED_WITH_TABLE: (StagedWith, sql_types(STAGED_WITH_COLUMNS)),
    CACHE_TABLE: (
        NormalisedValues,
        [("normaliser", "VARCHAR"), ("raw", "VARCHAR"), ("value", "VARCHAR")],
    ),
    **{f"core.{name}": (model, column_types(model)) for name, model in CORE_MODELS.items()},
    **{
        f"analytics.{name}": (model, column_types(model))
        for name, model in ANALYTICS_MODELS.items()
    },
    **{f"mining.{name}": (model, column_types(model)) for name, model in MINING_MODELS.items()},
}


# What the pseudonymous published copy leaves out: the delivered records, as raw holds them and
# staging cleans them, the normaliser's cache of delivered values, the records whose people
# asked to be erased (that they asked is theirs too), and identity resolution's tables, which
# tie each customer key to the sources' ids (an account id, a loyalty card number: whoever
# holds the sources would read the person behind a key). Core holds the records' rows under a
# customer key; every other log and quarantine table stays, its personal columns empty.
IDENTITY_TABLES = ("core.customer_crosswalk", "core.identity_groups")
UNPUBLISHED_TABLES = frozenset(
    [f"raw.{table}" for table in RAW_MODELS]
    + [f"staging.{table}" for table in STAGING_MODELS]
    + [CACHE_TABLE, ERASED_RECORDS, *IDENTITY_TABLES]
)


def published_columns(table: str, columns: list[str]) -> list[tuple[str, bool]] | None:
    """How the pseudonymous published copy holds a warehouse table whose columns are
    `columns`: each column and whether it is emptied (personal data: tagged so by the contract,
    or a column the contract does not name, such as a delivery's extra columns); None when the
    table is left out (UNPUBLISHED_TABLES, or a table no contract describes, whose columns
    nobody has tagged)."""
    if table in UNPUBLISHED_TABLES or table not in TABLES:
        return None
    model = TABLES[table][0]
    contract = model.to_schema().columns
    personal = personal_columns(model)
    return [(name, name in personal or name not in contract) for name in columns]


def published_note(table: str) -> str:
    """What the pseudonymous published copy holds of a table, for the dictionary."""
    if table in UNPUBLISHED_TABLES:
        return "Published copy (pseudonymous, the default): left out; read the warehouse."
    if personal_columns(TABLES[table][0]):
        return "Published copy (pseudonymous, the default): every row, personal columns empty."
    return "Published copy: the whole table."


def grain(model: type) -> str:
    """A table's grain: the first paragraph of its contract's docstring, as one line."""
    return " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())


def stored_types(warehouse: str) -> dict[str, dict[str, str]]:
    """Per table of a warehouse file (or its published copy), its columns' SQL types as
    stored."""
    with duckdb.connect(warehouse, read_only=True) as conn:
        rows = conn.execute(
            "SELECT table_schema || '.' || table_name, column_name, data_type "
            "FROM information_schema.columns"
        ).fetchall()
    stored: dict[str, dict[str, str]] = {}
    for table, column, data_type in rows:
        stored.setdefault(table, {})[column] = data_type
    return stored


def holds_delivered_records(stored: dict[str, dict[str, str]]) -> bool:
    """Whether a file's tables (stored_types) include those the pseudonymous copy leaves out:
    the warehouse itself, or a copy published whole (CRM_PUBLISHED_CONTENT=whole, or by a
    version from before the pseudonymous copy)."""
    return any(table in UNPUBLISHED_TABLES for table in stored)


def data_dictionary(warehouse: str | None = None) -> str:
    """Markdown: one section per table (grain first), one row per column. With a warehouse
    file, a column's type is the one stored there (the core and mart tables' types come from
    the SQL that builds them); without one, or for a table not in it, the contract's."""
    stored = stored_types(warehouse) if warehouse and Path(warehouse).exists() else {}
    source = (
        f"stored in {warehouse} (for a table not in it, the contract's)"
        if stored
        else "the contracts give (no warehouse read)"
    )
    lines = [
        "# Data dictionary",
        "",
        f"Columns tagged personal are personal data. Types as {source}.",
        "",
    ]
    if holds_delivered_records(stored):
        whole = (
            f"{warehouse} holds the delivered records and personal values: it is the "
            "warehouse, or a copy published whole (CRM_PUBLISHED_CONTENT=whole, or by a version "
            "from before the pseudonymous copy: the next publish with the default setting "
            "writes it pseudonymous). The notes on the published copy below describe the "
            "pseudonymous one."
        )
        lines += [whole, ""]
    for table, (model, types) in TABLES.items():
        contract = model.to_schema().columns
        lines += [f"## {table}", "", grain(model), "", published_note(table), ""]
        if stored and table not in stored and table not in UNPUBLISHED_TABLES:
            lines += ["Not in the warehouse yet: created when first written.", ""]
        lines += ["| column | type | personal | description |", "|---|---|---|---|"]
        for name, data_type in types:
            column = contract[name]
            personal = "yes" if (column.metadata or {}).get("personal_data") else ""
            shown = stored.get(table, {}).get(name) or sql_type(data_type)
            lines.append(f"| {name} | {shown} | {personal} | {column.description} |")
        lines.append("")
    return "\n".join(lines)


DICTIONARY_FILE = "data_dictionary.md"  # where `make run` writes it: beside the warehouse


def refresh_beside(warehouse: str, published: Path) -> Path | None:
    """Write the data dictionary beside the warehouse again from the published copy, when one
    is there: a command that replaces the copy outside a run (an erasure, which adds its
    tables) leaves no stale dictionary. The dictionary's path, or None."""
    path = Path(warehouse).with_name(DICTIONARY_FILE)
    if not path.exists():
        return None
    path.write_text(data_dictionary(str(published)), encoding="utf-8")
    return path
