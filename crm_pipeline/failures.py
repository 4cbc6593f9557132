"""Why a step failed, in words an operator can act on: which step, which source, which
partitions, the cause, and what to do. Dagster shows the message as the run's failure."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import dagster as dg
import duckdb
import sqlalchemy as sa


class ActionableError(Exception):
    """An error whose message already says what to do about it; retrying will not help."""


# What a retry can mend: a database that could not be reached, dropped the connection or was
# busy. Anything else (a bug, a bad setting) fails the same way again, so it fails at once.
TRANSIENT = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.DisconnectionError,
    sa.exc.TimeoutError,
    ConnectionError,
    TimeoutError,
)
# A SQLite shop is read through ADBC, whose errors are its own classes: a writer holding the
# file shows as a ProgrammingError saying so.
BUSY = ("database is locked", "database is busy")


def transient(error: BaseException) -> bool:
    """Whether a retry may mend the error (TRANSIENT, or a database busy with a writer)."""
    return isinstance(error, TRANSIENT) or any(b in str(error).lower() for b in BUSY)


# Query parameters of a database URL that hold a secret (libpq's and the drivers' names; an
# ODBC connection string holds its password among other settings, so it is masked whole).
_SECRET_QUERY = (
    "password",
    "passwd",
    "pwd",
    "sslpassword",
    "passfile",
    "token",
    "secret",
    "odbc_connect",
)
# A password inside an ODBC connection string: PWD=...; or Password=...;
_ODBC_PASSWORD = re.compile(r"(?i)(?:^|;)\s*(?:pwd|password)\s*=\s*(\{[^}]*\}|[^;]*)")


def _secret_query(key: str) -> bool:
    return any(part in key.lower() for part in _SECRET_QUERY)


def safe_url(url: str) -> str:
    """A database URL fit for a message or a log: the password, given before the host or as a
    query parameter (?password=...), replaced by ***."""
    try:
        parsed = sa.make_url(url)
        masked = {k: "***" if _secret_query(k) else v for k, v in parsed.query.items()}
        shown = parsed.set(query=masked).render_as_string(hide_password=True)
        return shown.replace("%2A%2A%2A", "***")  # the query's mask, as the URL quotes it
    except (sa.exc.ArgumentError, ValueError):  # ValueError: a port that is not a number
        return "<an unparseable database URL>"


def _secrets(url: str | None) -> list[str]:
    """The URL's password and secret query values."""
    try:
        parsed = sa.make_url(url) if url else None
    except (sa.exc.ArgumentError, ValueError):
        return []
    if parsed is None:
        return []
    found = [parsed.password] if parsed.password else []
    for key, value in parsed.query.items():
        if _secret_query(key):
            values = [value] if isinstance(value, str) else list(value)
            found += values
            # An ODBC string's password alone, as a driver's message may quote it.
            found += [m.group(1).strip("{}") for v in values for m in _ODBC_PASSWORD.finditer(v)]
    return [str(secret) for secret in found if secret]


def _without_password(text: str, url: str | None) -> str:
    """`text` with the URL's password (and secret query values) masked, wherever a driver's
    message repeated it."""
    for secret in _secrets(url):
        # As the URL spells it too (percent-encoded), in case a message quotes the URL itself.
        for spelling in {secret, quote(secret, safe="")}:
            text = text.replace(spelling, "***")
    return text


def listed(names: list[str], shown: int = 10) -> str:
    """Names for a message: the first `shown`, then how many more."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def partitions_of(context: dg.AssetExecutionContext) -> str:
    """The partition key or range a step was processing, in words."""
    # An unpartitioned asset in a run of a partition has the run's key, not one of its own.
    if context.assets_def.partitions_def is None:
        return "no partition (the whole table)"
    if context.has_partition_key:
        return f"partition {context.partition_key}"
    if not context.has_partition_key_range:
        return "no partition (the whole table)"
    keys = context.partition_key_range
    if keys.start == keys.end:
        return f"partition {keys.start}"
    return f"partitions {keys.start}..{keys.end}"


# What DuckDB says of a database file it cannot read as one: cut short, or its blocks damaged.
_DAMAGE = ("Corrupt database file", "Could not read enough bytes", "not a valid DuckDB database")
DAMAGED_ADVICE = (
    "The warehouse file (CRM_WAREHOUSE) is damaged (cut short, or its blocks changed on "
    "disk). Restore it from your backup, or move it aside and rebuild it from the landing "
    "zone with `crm-pipeline materialize` (keep the same key secret file, so customers keep "
    "their keys); the published copy analysts read is untouched."
)


def damaged_file(error: BaseException) -> bool:
    """Whether DuckDB failed because a database file is damaged."""
    return isinstance(error, duckdb.Error) and any(said in str(error) for said in _DAMAGE)


@contextmanager
def explained(
    context: dg.AssetExecutionContext, source: str, advice: str, url: str | None = None
) -> Iterator[None]:
    """Turn an exception escaping the block into a dg.Failure naming the asset, its source,
    the partitions and the cause (kept as __cause__), with `advice` unless the error gives
    its own. `url`: a database URL whose password must not appear in the message."""
    try:
        yield
    except dg.Failure:
        raise
    except Exception as error:
        step = ".".join(context.asset_key.path)
        partitions = partitions_of(context)
        cause = _without_password(f"{type(error).__name__}: {error}".strip(), url)
        actionable = isinstance(error, ActionableError)
        if damaged_file(error):  # the warehouse's own file, not what the step reads
            advice = DAMAGED_ADVICE
        description = f"{step} failed for {partitions}, reading {source}. Cause: {cause}" + (
            "" if actionable else f"\nWhat to do: {advice}"
        )
        raise dg.Failure(
            description=description,
            metadata={
                "source": dg.MetadataValue.text(source),
                "partitions": dg.MetadataValue.text(partitions),
                "cause": dg.MetadataValue.text(cause),
            },
            allow_retries=transient(error),
        ) from error
