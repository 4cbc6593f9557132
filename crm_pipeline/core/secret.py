"""The secret customer keys are made with, kept in a file outside the warehouse.

A key is a keyed hash of the customer's earliest record (core/keys.py): without the secret,
nobody can recompute a key from a source id, and neither the warehouse nor its published copy
holds it. The warehouse records only a check value (a keyed hash of a fixed text), so a run
with another secret, or none, stops before it gives a key, instead of giving keys that a
rebuild could not give again.

The file is made, readable by its owner only, when the first customers are keyed. A
warehouse whose keys are older than keyed hashing has no record (`legacy`): its runs key new
customers with the secret and warn until `crm-pipeline rekey` replaces the old keys.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from crm_pipeline.core.keys import rekey
from crm_pipeline.failures import ActionableError
from crm_pipeline.raw.tables import table_exists

SCHEME_TABLE = "core.customer_key_scheme"
SCHEME = "HMAC-SHA256 of the earliest record's source and id"
SETTING = "CRM_KEY_SECRET_FILE"
MIN_LENGTH = 32


class KeySecretError(ActionableError):
    """The secret customer keys are made with is missing, unreadable or not the warehouse's."""


@dataclass(frozen=True)
class KeySecret:
    """The secret, and whether the warehouse holds keys made before keyed hashing."""

    value: bytes
    legacy: bool


def check_value(secret: bytes) -> str:
    """What the warehouse keeps to recognise its secret (it tells nothing of the secret)."""
    return hmac.new(secret, b"crm-pipeline customer key check", hashlib.sha256).hexdigest()[:16]


def _recorded(conn: duckdb.DuckDBPyConnection) -> str | None:
    if not table_exists(conn, SCHEME_TABLE):
        return None
    found = conn.execute(f"SELECT secret_check FROM {SCHEME_TABLE}").fetchall()
    return found[0][0] if found else None


def record(conn: duckdb.DuckDBPyConnection, secret: bytes) -> None:
    """Record that every key of the warehouse is made with `secret` (in the caller's
    transaction)."""
    conn.execute(
        f"CREATE OR REPLACE TABLE {SCHEME_TABLE} AS "
        "SELECT CAST(? AS VARCHAR) AS scheme, CAST(? AS VARCHAR) AS secret_check",
        [SCHEME, check_value(secret)],
    )


def read(path: Path) -> bytes | None:
    """The secret in the file at `path`, None when there is no file; a clear error when it
    cannot be one."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise KeySecretError(
            f"Cannot read the customer key secret {path} ({error}). Give this user read access "
            f"to it, or point {SETTING} at the file holding it."
        ) from error
    if len(text) < MIN_LENGTH:
        raise KeySecretError(
            f"The customer key secret {path} holds {len(text)} characters, fewer than "
            f"{MIN_LENGTH}: a short secret can be guessed. Restore the file the warehouse's keys "
            f"were made with, or point {SETTING} at it."
        )
    return text.encode()


def create(path: Path) -> bytes:
    """A new random secret in a new file at `path`, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(value + "\n")
    return value.encode()


def key_secret(conn: duckdb.DuckDBPyConnection, path: Path) -> KeySecret:
    """The secret to make the warehouse's new keys with: the one its keys were made with.
    A warehouse with no customers yet gets a new secret (its file made, its check value
    recorded in the caller's transaction)."""
    recorded = _recorded(conn)
    value = read(path)
    if recorded is not None:
        stopped = read(pending(path)) if pending(path).exists() else None
        if stopped is not None and check_value(stopped) == recorded:
            raise KeySecretError(
                f"`crm-pipeline rekey --new-secret` stopped after replacing the keys and before "
                f"moving their new secret {pending(path)} to {path} ({SETTING}): move it there."
            )
        if value is None:
            raise KeySecretError(
                f"The warehouse's customer keys were made with the secret in {path} ({SETTING}), "
                "and there is no such file. Restore it from your backup (or point "
                f"{SETTING} at it); if it is lost, `crm-pipeline rekey --new-secret` gives every "
                "customer a new key with a new secret."
            )
        if not hmac.compare_digest(check_value(value), recorded):
            raise KeySecretError(
                f"The customer key secret {path} ({SETTING}) is not the one the warehouse's keys "
                "were made with. Restore that file (or point the setting at it); if it is lost, "
                "`crm-pipeline rekey --new-secret` gives every customer a new key with a new "
                "secret."
            )
        return KeySecret(value, legacy=False)
    if value is None:
        value = create(path)
    keyed = (
        table_exists(conn, "core.customer_crosswalk")
        and conn.execute("SELECT count(*) FROM core.customer_crosswalk").fetchone()[0]
    )
    if not keyed:
        record(conn, value)
    return KeySecret(value, legacy=bool(keyed))


def pending(path: Path) -> Path:
    """Where `crm-pipeline rekey --new-secret` writes the new secret until its keys are in."""
    return path.with_name(path.name + ".new")


def replace_keys(
    conn: duckdb.DuckDBPyConnection, path: Path, new_secret: bool, now: datetime
) -> tuple[int, int] | None:
    """Give every customer the keyed key a rebuild would give it (keys.rekey), with the
    warehouse's secret, or with a new one (`new_secret`: made in `pending(path)`, moved to
    `path` once the keys are in). How many keys of customers and retired keys were replaced;
    None when every key already is keyed with the secret."""
    if new_secret:
        fresh = pending(path)
        fresh.unlink(missing_ok=True)
        value = create(fresh)
    else:
        current = key_secret(conn, path)
        if not current.legacy and _recorded(conn) is not None:
            return None
        value = current.value
    conn.begin()
    changed = rekey(conn, value, now)
    record(conn, value)
    conn.commit()
    if new_secret:
        os.replace(fresh, path)
    return changed
