"""Core model assets (schema core): the crosswalk of identities, and customers, products,
stores, order lines, inquiries and feedback keyed by it."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb

from crm_pipeline.checked import LOAD_TIME, record_check, take_record
from crm_pipeline.contracts import (
    SHOWN_EXAMPLES,
    beside,
    failing_rows_markdown,
    repeated_keys,
    validate_query,
)
from crm_pipeline.core import model
from crm_pipeline.core.classify import CoreRules
from crm_pipeline.core.crosswalk import build_crosswalk, pairwise_scores
from crm_pipeline.core.order_lines import Written, build_order_lines
from crm_pipeline.core.quality import build_quality_report, summary_markdown, unconserved
from crm_pipeline.core.schemas import CORE_MODELS, column_types
from crm_pipeline.core.secret import KeySecret, key_secret
from crm_pipeline.failures import explained
from crm_pipeline.landing import NEED_DIMENSIONS, PRODUCTS, STORES, ground_truth_dir_for
from crm_pipeline.marts import DAILY_FRESHNESS
from crm_pipeline.raw.tables import REJECTS_TABLE as RAW_REJECTS_TABLE
from crm_pipeline.raw.tables import table_exists
from crm_pipeline.reporting import schema_of, table_metadata
from crm_pipeline.resources import WAREHOUSE_POOL, LandingZoneResource, WarehouseResource
from crm_pipeline.staging.build import REJECTS_TABLE
from crm_pipeline.staging.rules import SOURCES as STAGING_SOURCES
from crm_pipeline.staging.rules import text

PRECISION_TARGET, RECALL_TARGET = 0.98, 0.95


@dataclass(frozen=True)
class Reference:
    """A column whose values must exist in another table's key."""

    column: str
    table: str
    key: str


@dataclass(frozen=True)
class CoreTable:
    name: str
    deps: tuple[str, ...]
    key: tuple[str, ...]
    references: tuple[Reference, ...] = ()
    # Built with the warehouse's large_memory_limit: at the default, the identity resolution,
    # the sorted order lines and the golden record spill to disk (5-7 s more each at 1M).
    large_memory: bool = False


TABLES = {
    t.name: t
    for t in (
        CoreTable(
            "customer_crosswalk",
            tuple(
                f"staging/{s}"
                for s in (
                    "online_accounts",
                    "loyalty_members",
                    "store_purchases",
                    "inquiries",
                    "feedback",
                    "online_orders",
                )
            ),
            ("source", "source_id"),
            large_memory=True,
        ),
        CoreTable("products", ("staging/products",), ("sku",)),
        CoreTable("stores", ("staging/stores",), ("store_id",)),
        CoreTable(
            "order_lines",
            (
                "core/customer_crosswalk",
                "staging/online_orders",
                "staging/online_order_items",
                "staging/store_purchases",
                "core/products",
            ),
            ("channel", "order_id", "line_no"),
            (
                Reference("sku", "core.products", "sku"),
                Reference("store_id", "core.stores", "store_id"),
            ),
            large_memory=True,
        ),
        CoreTable(
            "inquiries",
            ("core/customer_crosswalk", "staging/inquiries", "core/products"),
            ("inquiry_id",),
            (Reference("sku", "core.products", "sku"),),
        ),
        CoreTable("feedback", ("core/customer_crosswalk", "staging/feedback"), ("response_id",)),
        CoreTable(
            "feedback_needs", ("core/feedback", "staging/feedback"), ("response_id", "dimension")
        ),
        CoreTable(
            "customers",
            (
                "core/customer_crosswalk",
                "core/order_lines",
                "core/inquiries",
                "core/feedback",
                "core/feedback_needs",
                "core/stores",
                "staging/online_accounts",
                "staging/loyalty_members",
            ),
            ("customer_key",),
            large_memory=True,
        ),
    )
}
# Facts whose customer keys must all be in core.customers (checked on customers, built last).
CUSTOMER_FACTS = ("order_lines", "inquiries", "feedback", "feedback_needs")


def _rows_where(
    conn: duckdb.DuckDBPyConnection, table: str, key: tuple[str, ...], show: str, condition: str
) -> tuple[int, list[dict]]:
    """How many rows of `table` meet `condition`, and the first few: their key and `show`."""
    columns = [*key, show] if show not in key else list(key)
    result = conn.execute(
        f"""
        SELECT {", ".join(f"t.{c}" for c in columns)}, count(*) OVER () AS n
        FROM {table} AS t
        WHERE {condition}
        ORDER BY ALL
        LIMIT {SHOWN_EXAMPLES}
        """
    )
    rows = result.fetchall()
    return (rows[0][-1] if rows else 0), [dict(zip(columns, r[:-1], strict=True)) for r in rows]


# The reference files core.products and core.stores are built from, with their key.
_REFERENCE_FILES = {"core.products": (PRODUCTS, "sku"), "core.stores": (STORES, "store_id")}


def _rejected_by(
    conn: duckdb.DuckDBPyConnection, source: str, column: str, values: list[str]
) -> dict[str, str]:
    """Which of `values` staging set aside from a source, by the rule of its latest rejection
    (the delivered value read as staging reads it: trimmed, upper case)."""
    if not table_exists(conn, REJECTS_TABLE):
        return {}
    value = f"upper({text(column)})"
    return dict(
        conn.execute(
            f"""
            SELECT {value}, arg_max(r.rule, r.loaded_at)
            FROM (
                SELECT json_extract_string(record, '$.{column}') AS {column}, rule, loaded_at
                FROM {REJECTS_TABLE} WHERE source = ?
            ) AS r
            WHERE list_contains(?, {value})
            GROUP BY ALL
            """,
            [source, values],
        ).fetchall()
    )


def _unresolved_reference(
    conn: duckdb.DuckDBPyConnection, ref: Reference, condition: str, table: str
) -> str:
    """Why a few of the values `table` names are not in a reference table, and what to do:
    set aside from the reference file (by which rule), or not in the file at all."""
    reference, column = _REFERENCE_FILES[ref.table]
    values = [
        v
        for (v,) in conn.execute(
            f"SELECT DISTINCT t.{ref.column} FROM {table} AS t WHERE {condition} "
            f"ORDER BY 1 LIMIT {SHOWN_EXAMPLES}"
        ).fetchall()
    ]
    rules = _rejected_by(conn, reference.name, column, values)
    unread = (
        conn.execute(
            f"SELECT count(*) FROM {RAW_REJECTS_TABLE} WHERE source = ?", [reference.name]
        ).fetchall()[0][0]
        if table_exists(conn, RAW_REJECTS_TABLE)
        else 0
    )
    # A line raw could not read is not searched for the value: said as a possibility.
    missing = (
        f"not staged (not in the file, or on one of its {unread} line(s) set aside in "
        f"{RAW_REJECTS_TABLE})"
        if unread
        else "not in the file"
    )
    said = [f"{v} set aside in {REJECTS_TABLE} ({rules[v]})" for v in values if v in rules]
    said += [f"{v} {missing}" for v in values if v not in rules]
    return (
        f" ({ref.table} is built from {reference.folder}/{reference.pattern}: "
        + "; ".join(said)
        + f"). Deliver {reference.pattern} again with these {column} values, correct, then "
        f"re-materialize raw.{reference.name}, staging.{reference.name}, {ref.table} and what "
        "follows"
    )


def _keys_check(conn: duckdb.DuckDBPyConnection, table: CoreTable) -> dg.AssetCheckResult:
    """Key unique and not null; references resolve. Each problem names a few rows by key."""
    name = f"core.{table.name}"
    key = ", ".join(table.key)
    problems: list[str] = []
    failing: list[dict] = []

    def found(count: int, rows: list[dict], what: str, where: str) -> None:
        if count:
            shown = "; ".join(", ".join(f"{k}={v}" for k, v in r.items()) for r in rows)
            problems.append(f"{count} rows of {where} {what}, e.g. {shown}")
            failing.extend({"table": where, "problem": what} | r for r in rows)

    repeats = repeated_keys(conn, name, table.key)
    if repeats.count:
        problems.append(repeats.describe(name))
        failing.extend({"table": name, "problem": "key repeats"} | e for e in repeats.examples)
    nulls = " OR ".join(f"t.{k} IS NULL" for k in table.key)
    found(*_rows_where(conn, name, table.key, table.key[0], nulls), f"have a NULL in ({key})", name)
    for ref in table.references:
        condition = (
            f"t.{ref.column} IS NOT NULL AND t.{ref.column} NOT IN "
            f"(SELECT {ref.key} FROM {ref.table} WHERE {ref.key} IS NOT NULL)"
        )
        count, rows = _rows_where(conn, name, table.key, ref.column, condition)
        found(count, rows, f"have a {ref.column} not in {ref.table}", name)
        if count and ref.table in _REFERENCE_FILES:
            problems[-1] += _unresolved_reference(conn, ref, condition, name)
    if table.name == "customers":
        for fact in CUSTOMER_FACTS:
            condition = (
                "t.customer_key IS NOT NULL AND t.customer_key NOT IN "
                "(SELECT customer_key FROM core.customers WHERE customer_key IS NOT NULL)"
            )
            found(
                *_rows_where(conn, f"core.{fact}", TABLES[fact].key, "customer_key", condition),
                "have a customer_key not in core.customers",
                f"core.{fact}",
            )
    return dg.AssetCheckResult(
        check_name="keys",
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(problems) or f"({key}) unique and not null; references resolve.",
        metadata={"failing_rows": dg.MetadataValue.md(failing_rows_markdown(failing))}
        if failing
        else {},
    )


def _contract_check(
    conn: duckdb.DuckDBPyConnection, name: str, through: datetime | None = None
) -> dg.AssetCheckResult:
    """The contract on every row, or only on the rows loaded after `through`, when every
    earlier row passed it (see crm_pipeline/checked.py)."""
    table, contract = f"core.{name}", CORE_MODELS[name]
    where, params = ("TRUE", [])
    if through is not None:
        where, params = f"({LOAD_TIME} > ? OR {LOAD_TIME} IS NULL)", [through]
    outcome = validate_query(
        conn, f"SELECT * FROM {table} WHERE {where}", params, contract, keys=TABLES[name].key
    )
    description = outcome.describe()
    if through is not None:
        description += (
            f" (the rows loaded after {through:%Y-%m-%d %H:%M:%S}; every earlier row passed "
            "this contract before)"
        )
    return dg.AssetCheckResult(
        check_name="contract",
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata=outcome.metadata(),
    )


def _identity_check(conn: duckdb.DuckDBPyConnection, landing_root: str) -> dg.AssetCheckResult:
    truth = ground_truth_dir_for(landing_root) / "identities.csv"
    if not truth.exists():
        return dg.AssetCheckResult(
            check_name="identity_accuracy",
            passed=True,
            description=f"No ground truth at {truth} (only generated landing zones have one).",
        )
    scores = pairwise_scores(conn, truth)
    ok = scores["precision"] >= PRECISION_TARGET and scores["recall"] >= RECALL_TARGET
    return dg.AssetCheckResult(
        check_name="identity_accuracy",
        passed=ok,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"Pairwise precision {scores['precision']:.4f} (target {PRECISION_TARGET}), "
            f"recall {scores['recall']:.4f} (target {RECALL_TARGET}) against {truth}."
        ),
        metadata={k: float(v) for k, v in scores.items()},
    )


def _keyed_check(secret: KeySecret, path: Path) -> dg.AssetCheckResult:
    """Whether every key is made with the secret (so none can be recomputed from an id), and
    no old key is left in the files after a rekey."""
    if secret.keys_before_secret:
        description = (
            "Customer keys given before keyed hashing are plain hashes of a source id: whoever "
            f"holds the sources can recompute them. New keys are made with the secret in {path}. "
            "Run `crm-pipeline rekey` to replace every key with a keyed one (keys change: tell "
            "whoever keeps keys outside the warehouse)."
        )
    elif secret.files_pending:
        description = (
            "A rekey replaced every key in the tables, but the old keys may remain in the "
            "warehouse file's free blocks (and so in every published copy of it) and the report: "
            "run `crm-pipeline rekey` again to finish."
        )
    else:
        description = f"Every customer key is a keyed hash made with the secret in {path}."
    return dg.AssetCheckResult(
        check_name="keys_keyed",
        passed=not (secret.keys_before_secret or secret.files_pending),
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
    )


def _specs(key: dg.AssetKey, name: str) -> list[dg.AssetCheckSpec]:
    specs = [
        dg.AssetCheckSpec(
            "contract", asset=key, blocking=True, description="The strict pandera contract holds."
        ),
        dg.AssetCheckSpec(
            "keys",
            asset=key,
            blocking=True,
            description="Key unique and not null; references to customers, products and stores resolve.",
        ),
    ]
    if name == "customer_crosswalk":
        specs.append(
            dg.AssetCheckSpec(
                "identity_accuracy",
                asset=key,
                description=(
                    "Pairwise precision and recall against the generator's true identities, when "
                    f"the landing zone has them (targets {PRECISION_TARGET} and {RECALL_TARGET})."
                ),
            )
        )
        specs.append(
            dg.AssetCheckSpec(
                "keys_keyed",
                asset=key,
                description="Every customer key is a keyed hash made with the warehouse's "
                "secret, so none can be recomputed from a source id.",
            )
        )
    return specs


# A builder writes its table at the time given; it may say how (order lines: whole, or only
# the orders a run changed). The crosswalk, which needs the key secret, is built in _core.
Builder = Callable[[duckdb.DuckDBPyConnection, CoreRules, datetime], Written | None]
BUILDERS: dict[str, Builder] = {
    "products": lambda conn, _, __: model.build_products(conn),
    "stores": lambda conn, _, __: model.build_stores(conn),
    "order_lines": build_order_lines,
    "inquiries": lambda conn, rules, _: model.build_inquiries(conn, rules),
    "feedback": lambda conn, rules, _: model.build_feedback(conn, rules),
    "feedback_needs": lambda conn, _, __: model.build_feedback_needs(conn, NEED_DIMENSIONS),
    "customers": lambda conn, rules, _: model.build_customers(conn, rules),
}


def core_asset(table: CoreTable) -> dg.AssetsDefinition:
    key = dg.AssetKey(["core", table.name])
    qualified, contract = f"core.{table.name}", CORE_MODELS[table.name]
    recorded_checks = LOAD_TIME in contract.to_schema().columns

    @dg.asset(
        key=key,
        group_name="core",
        description=contract.__doc__,
        deps=[dg.AssetKey(d.split("/")) for d in table.deps],
        pool=WAREHOUSE_POOL,
        kinds={"duckdb"},
        check_specs=_specs(key, table.name),
        tags={"layer": "core"},
        metadata={"dagster/column_schema": schema_of(contract, column_types(contract))},
        # The customers, like the marts, are recomputed as of the day by every daily run.
        freshness_policy=DAILY_FRESHNESS if table.name == "customers" else None,
    )
    def _core(
        context: dg.AssetExecutionContext,
        core_rules: CoreRules,
        warehouse: WarehouseResource,
        landing_zone: LandingZoneResource,
    ) -> dg.MaterializeResult:
        reading = ", ".join(d.replace("/", ".") for d in table.deps)
        advice = f"Fix the cause, then re-materialize {qualified} and what follows it."
        memory = warehouse.large_memory_limit if table.large_memory else None
        with explained(context, reading, advice), warehouse.connect(memory_limit=memory) as conn:
            conn.execute("CREATE SCHEMA IF NOT EXISTS core")
            conn.begin()
            now = datetime.now(UTC).replace(tzinfo=None)
            recorded = take_record(conn, qualified, contract) if recorded_checks else None
            if table.name == "customer_crosswalk":
                secret = key_secret(conn, warehouse.key_secret_path())
                written = build_crosswalk(conn, now, secret.value)
            else:
                written = BUILDERS[table.name](conn, core_rules, now)
            conn.commit()
            # Rows written in part are checked on their own when every earlier row passed (and
            # the clock has not gone back since).
            partial = written is not None and not written.whole
            through = recorded if partial and recorded is not None and recorded < now else None
            metadata = table_metadata(conn, qualified, contract)
            if written:
                metadata["written"] = written.summary
            with beside(conn, lambda other: _keys_check(other, table)) as keys:
                checks = [_contract_check(conn, table.name, through)]
            checks.append(keys.result())
            if recorded_checks:  # once no other cursor reads the table
                record_check(conn, qualified, contract, checks[0].passed)
            if table.name == "customer_crosswalk":
                rules = conn.execute(
                    "SELECT match_rule, count(*) FROM core.customer_crosswalk GROUP BY ALL ORDER BY 2 DESC"
                ).fetchall()
                metadata["records_by_match_rule"] = dg.MetadataValue.json(dict(rules))
                metadata["customers"] = conn.execute(
                    "SELECT count(DISTINCT customer_key) FROM core.customer_crosswalk"
                ).fetchone()[0]
                checks.append(_identity_check(conn, landing_zone.root))
                checks.append(_keyed_check(secret, warehouse.key_secret_path()))
            if table.name == "order_lines":
                excluded = conn.execute(
                    "SELECT entity || ': ' || rule, count(*) FROM core.excluded_rows GROUP BY ALL"
                ).fetchall()
                metadata["excluded_rows"] = dg.MetadataValue.json(dict(excluded))
            context.log.info(f"{qualified}: {metadata['dagster/row_count']} rows")
            return dg.MaterializeResult(metadata=metadata, check_results=checks)

    return _core


core_assets = [core_asset(table) for table in TABLES.values()]


QUALITY_KEY = dg.AssetKey(["core", "quality_report"])


@dg.asset(
    key=QUALITY_KEY,
    group_name="core",
    description=CORE_MODELS["quality_report"].__doc__,
    deps=[
        *(dg.AssetKey(["staging", name]) for name in STAGING_SOURCES),
        dg.AssetKey(["core", "customer_crosswalk"]),
    ],
    pool=WAREHOUSE_POOL,
    kinds={"duckdb"},
    tags={"layer": "core"},
    metadata={
        "dagster/column_schema": schema_of(
            CORE_MODELS["quality_report"], column_types(CORE_MODELS["quality_report"])
        )
    },
    check_specs=[
        dg.AssetCheckSpec(
            "rows_conserved",
            asset=QUALITY_KEY,
            blocking=True,
            description="Every source partition: raw = staged + quarantined + merged.",
        )
    ],
)
def quality_report(warehouse: WarehouseResource) -> dg.MaterializeResult:
    with warehouse.connect() as conn:
        conn.begin()
        build_quality_report(conn, list(STAGING_SOURCES))
        conn.commit()
        metadata = table_metadata(conn, "core.quality_report", CORE_MODELS["quality_report"])
        metadata["report"] = dg.MetadataValue.md(summary_markdown(conn))
        broken = unconserved(conn)
        check = dg.AssetCheckResult(
            check_name="rows_conserved",
            passed=broken.empty,
            severity=dg.AssetCheckSeverity.ERROR,
            description=(
                "Every raw row is staged, quarantined or merged."
                if broken.empty
                else "Rows unaccounted for:\n" + broken.head(10).to_markdown(index=False)
            ),
        )
        return dg.MaterializeResult(metadata=metadata, check_results=[check])


core_assets.append(quality_report)
