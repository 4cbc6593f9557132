"""Validating warehouse tables against pandera models, streamed so memory stays bounded."""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb
import pandas as pd
import pandera.errors
import pandera.pandas as pa

BATCH_ROWS = 250_000
MAX_FAILURE_EXAMPLES = 20


@dataclass
class ValidationOutcome:
    """What a contract check found: rows seen, failures counted, a few examples to act on."""

    rows: int = 0
    failures: int = 0
    examples: list[dict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.failures == 0

    def describe(self) -> str:
        if self.passed:
            return f"{self.rows} rows satisfy the contract"
        lines = [f"{self.failures} contract failures in {self.rows} rows, for example:"]
        lines += [
            f"- column {e['column']}: {e['check']} failed on {e['failure_case']!r} (row {e['index']})"
            for e in self.examples[:5]
        ]
        return "\n".join(lines)


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
    batch_rows: int = BATCH_ROWS,
) -> ValidationOutcome:
    """Validate the rows of a query against a model, one Arrow record batch at a time."""
    outcome = ValidationOutcome()
    reader = conn.sql(_decimals_as_double(conn, query, params), params=params or None)
    reader = reader.to_arrow_reader(batch_rows)
    for batch in reader:
        frame = batch.to_pandas(date_as_object=False)
        frame.index = pd.RangeIndex(outcome.rows, outcome.rows + len(frame))
        outcome.rows += len(frame)
        try:
            model.validate(frame, lazy=True)
        except pandera.errors.SchemaErrors as err:
            cases = err.failure_cases
            outcome.failures += len(cases)
            room = MAX_FAILURE_EXAMPLES - len(outcome.examples)
            if room > 0:
                outcome.examples += (
                    cases.head(room)[["column", "check", "failure_case", "index"]]
                    .astype(str)
                    .to_dict("records")
                )
    return outcome
