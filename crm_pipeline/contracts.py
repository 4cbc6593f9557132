"""Validating warehouse tables against pandera models, streamed so memory stays bounded, and
naming each failing row by the columns an operator can look it up with."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import dagster as dg
import duckdb
import pandas as pd
import pandera.errors
import pandera.pandas as pa

from crm_pipeline.reporting import masked, personal_columns

T = TypeVar("T")

BATCH_ROWS = 250_000
MAX_FAILURE_EXAMPLES = 20
SHOWN_EXAMPLES = 5


@contextmanager
def beside(
    conn: duckdb.DuckDBPyConnection, work: Callable[[duckdb.DuckDBPyConnection], T]
) -> Iterator[Future[T]]:
    """Run work(cursor) on a second cursor of `conn`, in a thread, while the block runs (a
    key check in DuckDB beside a pandera check: DuckDB runs its queries on its own threads
    while pandera holds Python's). The future is done when the block ends."""
    with conn.cursor() as other, ThreadPoolExecutor(1) as pool:
        yield pool.submit(work, other)


@dataclass
class ValidationOutcome:
    """What a contract check found: rows seen, failures counted, a few examples to act on.

    Each example names its row by `keys` (the table's business key or lineage columns), the
    column, the rule that failed and the value it failed on."""

    keys: list[str] = field(default_factory=list)
    rows: int = 0
    failures: int = 0
    examples: list[dict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.failures == 0

    def add(self, other: ValidationOutcome) -> None:
        """Count another table's failures (a quarantine log checked with the load) in this one."""
        self.failures += other.failures
        self.examples += other.examples[: MAX_FAILURE_EXAMPLES - len(self.examples)]

    def describe(self) -> str:
        if self.passed:
            return f"{self.rows} rows satisfy the contract"
        lines = [f"{self.failures} contract failures in {self.rows} rows, for example:"]
        lines += [
            f"- {e['row']}: column {e['column']} failed {e['check']} with {e['failure_case']!r}"
            for e in self.examples[:SHOWN_EXAMPLES]
        ]
        return "\n".join(lines)

    def metadata(self) -> dict[str, dg.MetadataValue | int]:
        """Counts, and the failing rows as a Markdown table when there are any."""
        metadata: dict[str, dg.MetadataValue | int] = {
            "rows_checked": self.rows,
            "failures": self.failures,
        }
        if self.examples:
            metadata["failing_rows"] = dg.MetadataValue.md(failing_rows_markdown(self.examples))
        return metadata


def failing_rows_markdown(examples: list[dict]) -> str:
    """Examples as a Markdown table, values shortened so the UI stays readable."""
    frame = pd.DataFrame(examples).astype(object)
    frame = frame.where(frame.notna(), "NULL").astype(str).apply(lambda col: col.str.slice(0, 60))
    return frame.to_markdown(index=False)


def _row_names(frame: pd.DataFrame, index: pd.Series, keys: list[str]) -> list[str]:
    """'key=value, ...' for each failing row index; 'whole table' for a failure of no row
    (a missing column, a failed dataframe-level check)."""
    names = []
    for position in index:
        if pd.isna(position) or int(position) not in frame.index:
            names.append("whole table")
        elif keys:
            row = frame.loc[int(position)]
            names.append(", ".join(f"{k}={row[k]}" for k in keys if k in frame.columns))
        else:
            names.append(f"row {int(position) + 1} of the result")
    return names


def _decimals_as_double(conn: duckdb.DuckDBPyConnection, query: str, params: list | None) -> str:
    """The query with DECIMAL columns read as DOUBLE: pandas holds decimals as Python objects,
    which makes converting and checking a batch several times slower; a contract on money
    checks ranges, which doubles hold exactly enough."""
    columns = conn.execute(f"DESCRIBE {query}", params or []).fetchall()
    decimals = [name for name, kind, *_ in columns if kind.startswith("DECIMAL")]
    if not decimals:
        return query
    casts = ", ".join(f'CAST("{name}" AS DOUBLE) AS "{name}"' for name in decimals)
    return f"SELECT * REPLACE ({casts}) FROM ({query})"


def validate_query(
    conn: duckdb.DuckDBPyConnection,
    query: str,
    params: list | None,
    model: type[pa.DataFrameModel],
    keys: list[str] | tuple[str, ...] = (),
    batch_rows: int = BATCH_ROWS,
) -> ValidationOutcome:
    """Validate the rows of a query against a model, one Arrow record batch at a time; a
    failing row is named by its `keys` columns (the grain, or the lineage of a raw row)."""
    outcome = ValidationOutcome(keys=list(keys))
    personal = personal_columns(model)
    reader = conn.sql(_decimals_as_double(conn, query, params), params=params or None)
    reader = reader.to_arrow_reader(batch_rows)
    for batch in reader:
        frame = batch.to_pandas(date_as_object=False)
        frame.index = pd.RangeIndex(outcome.rows, outcome.rows + len(frame))
        outcome.rows += len(frame)
        try:
            # In place: the batch is ours, and pandera's copy of it costs a tenth of the check.
            model.validate(frame, lazy=True, inplace=True)
        except pandera.errors.SchemaErrors as err:
            cases = err.failure_cases
            outcome.failures += len(cases)
            room = MAX_FAILURE_EXAMPLES - len(outcome.examples)
            if room > 0:
                shown = cases.head(room)
                examples = pd.DataFrame(
                    {
                        "row": _row_names(frame, shown["index"], outcome.keys),
                        "column": shown["column"].astype(str).to_numpy(),
                        "check": shown["check"].astype(str).to_numpy(),
                        # A personal value is shown by its shape (what is wrong with it).
                        "failure_case": [
                            masked(v) if c in personal else str(v)
                            for c, v in zip(shown["column"], shown["failure_case"], strict=True)
                        ],
                    }
                )
                outcome.examples += examples.to_dict("records")
    return outcome


def validate_queries(
    conn: duckdb.DuckDBPyConnection,
    queries: list[tuple[str, list, type[pa.DataFrameModel], Sequence[str]]],
) -> ValidationOutcome:
    """Validate several queries (query, params, model, keys) as one check: a table and the
    logs loaded with it. The first names the outcome's keys; the others' failures count in it."""
    outcome = validate_query(conn, *queries[0])
    for query in queries[1:]:
        outcome.add(validate_query(conn, *query))
    return outcome


@dataclass(frozen=True)
class Repeats:
    """Values of a key that occur more than once: how many, and the first few, each with its
    number of rows (and the partitions they are in, when asked for)."""

    key: tuple[str, ...]
    count: int
    examples: list[dict]

    def describe(self, table: str) -> str:
        if not self.count:
            return ""
        shown = "; ".join(
            ", ".join(f"{k}={e[k]}" for k in self.key)
            + f" ({e['rows']} rows"
            + (f" on {e['partitions']}" if e.get("partitions") else "")
            + ")"
            for e in self.examples
        )
        left = self.count - len(self.examples)
        more = f" and {left} more" if left else ""
        return f"{self.count} values of ({', '.join(self.key)}) repeat in {table}: {shown}{more}"

    def markdown(self) -> str:
        return failing_rows_markdown(self.examples)


def repeated_keys(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    key: list[str] | tuple[str, ...],
    where: str = "TRUE",
    params: list | None = None,
    partitions: bool = False,
) -> Repeats:
    """The values of `key` that occur more than once in the rows of `table` matching `where`
    (a NULL counts as a value); `partitions`: list the partition days each value is on."""
    columns = ", ".join(f'"{k}"' for k in key)
    # Keys whose hashes all differ are all different: one 64-bit number per row groups in half
    # the time the key's own columns (text, mostly) take, and a shared hash, a repeated key or
    # a rare collision, sends the check to the query that names the repeats.
    (shared,) = conn.execute(
        f"""
        SELECT count(*) FROM (
            SELECT hash({columns}) AS h FROM {table} WHERE {where} GROUP BY h HAVING count(*) > 1
        )
        """,
        params or [],
    ).fetchone()
    if not shared:
        return Repeats(tuple(key), 0, [])
    repeated = f"""
        SELECT {columns}, count(*) AS rows, count(*) OVER () AS repeated
        FROM {table}
        WHERE {where}
        GROUP BY {columns}
        HAVING count(*) > 1
        ORDER BY rows DESC, {columns}
        LIMIT {SHOWN_EXAMPLES}
    """
    if not partitions:
        result = conn.execute(repeated, params or [])
    else:
        # The days of the few values shown only: an ordered DISTINCT list per value of a key
        # over millions of rows would cost more than the rest of the check.
        day = "CAST(t.partition_date AS VARCHAR)"
        same = " AND ".join(f't."{k}" IS NOT DISTINCT FROM r."{k}"' for k in key)
        shown = ", ".join(f'r."{k}"' for k in key)
        result = conn.execute(
            f"""
            WITH r AS ({repeated})
            SELECT {shown}, any_value(r.rows) AS rows,
                   string_agg(DISTINCT {day}, ', ' ORDER BY {day}) AS partitions,
                   any_value(r.repeated) AS repeated
            FROM r JOIN (SELECT * FROM {table} WHERE {where}) AS t ON {same}
            GROUP BY {shown}
            ORDER BY rows DESC, {shown}
            """,
            [*(params or []), *(params or [])],
        )
    names = [d[0] for d in result.description][:-1]
    rows = result.fetchall()
    examples = [dict(zip(names, row[:-1], strict=True)) for row in rows]
    return Repeats(tuple(key), rows[0][-1] if rows else 0, examples)


def contract_check(
    check_name: str, table: str, outcome: ValidationOutcome, repeats: Repeats, advice: str = ""
) -> dg.AssetCheckResult:
    """A blocking check's result: the contract's failing rows and the key's repeated values,
    each named, with `advice` on what to do about repeats."""
    description = outcome.describe()
    metadata = outcome.metadata()
    if repeats.count:
        description += f"\n{repeats.describe(table)}. {advice}".rstrip()
        metadata["failures"] += repeats.count
        metadata["repeated_keys"] = dg.MetadataValue.md(repeats.markdown())
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=outcome.passed and not repeats.count,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata=metadata,
    )
