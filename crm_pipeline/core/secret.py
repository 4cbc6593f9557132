"""The secret customer keys are made with, kept in a file outside the warehouse.

A key is a keyed hash of the customer's earliest record (core/keys.py): without the secret,
nobody can recompute a key from a source id, and neither the warehouse nor its published copy
holds it. The warehouse records only a check value (a keyed hash of a fixed text), so a run
with another secret, or none, stops before it gives a key, instead of giving keys that a
rebuild could not give again.

The file is made, readable by its owner only, by the first run. A warehouse that held keys
before keyed hashing records the secret its next run finds (or makes) and that it still
holds such keys (`keys_before_secret`): its runs key new customers with the secret and warn
until `crm-pipeline rekey` replaces the old keys.
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

from crm_pipeline import replace_file
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
    """The secret, and what the warehouse records beside its check value: keys given before
    keyed hashing are still held (`keys_before_secret`), or a rekey has replaced keys in the
    tables but not yet in the warehouse file's free blocks, the published copy and the report
    (`files_pending`)."""

    value: bytes
    keys_before_secret: bool = False
    files_pending: bool = False


def check_value(secret: bytes) -> str:
    """What the warehouse keeps to recognise its secret (it tells nothing of the secret)."""
    return hmac.new(secret, b"crm-pipeline customer key check", hashlib.sha256).hexdigest()[:16]


def _recorded(conn: duckdb.DuckDBPyConnection) -> tuple[str, bool, bool] | None:
    """The check value, keys_before_secret and files_pending the warehouse records (a flag
    its table does not have yet is false)."""
    if not table_exists(conn, SCHEME_TABLE):
        return None
    cursor = conn.execute(f"FROM {SCHEME_TABLE}")
    found = cursor.fetchone()
    if found is None:
        return None
    row = dict(zip((d[0] for d in cursor.description), found, strict=True))
    return (
        row["secret_check"],
        bool(row.get("keys_before_secret", False)),
        bool(row.get("files_pending", False)),
    )


def record(conn: duckdb.DuckDBPyConnection, secret: KeySecret) -> None:
    """Record how the warehouse's keys are made, and with which secret (in the caller's
    transaction)."""
    conn.execute(
        f"CREATE OR REPLACE TABLE {SCHEME_TABLE} AS "
        "SELECT CAST(? AS VARCHAR) AS scheme, CAST(? AS VARCHAR) AS secret_check, "
        "CAST(? AS BOOLEAN) AS keys_before_secret, CAST(? AS BOOLEAN) AS files_pending",
        [SCHEME, check_value(secret.value), secret.keys_before_secret, secret.files_pending],
    )


def read(path: Path) -> bytes | None:
    """The secret in the file at `path`, None when there is no file; a clear error when it
    cannot be one."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as error:
        raise KeySecretError(
            f"The customer key secret {path} is not text ({error}): it holds the secret as at "
            f"least {MIN_LENGTH} characters. Restore the file the warehouse's keys were made "
            f"with, or point {SETTING} at it."
        ) from error
    except OSError as error:
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
    value = secrets.token_hex(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(value + "\n")
    except OSError as error:
        raise KeySecretError(
            f"Cannot write a customer key secret to {path} ({error}). Point {SETTING} at a file "
            f"this user can create, or write one there yourself: at least {MIN_LENGTH} random "
            "characters (`openssl rand -hex 32`), readable by this user only."
        ) from error
    return value.encode()


def pending(path: Path) -> Path:
    """Where `crm-pipeline rekey --new-secret` writes the new secret until its keys are in
    (beside the file a link points to, so the link stays)."""
    real = path.resolve()
    return real.with_name(real.name + ".new")


def _verify(recorded: str, value: bytes | None, path: Path) -> None:
    """Stop, saying what to do, unless `value` is the secret whose check value is recorded."""
    stopped = read(pending(path))
    if stopped is not None and check_value(stopped) == recorded:
        raise KeySecretError(
            f"`crm-pipeline rekey --new-secret` stopped after replacing the keys and before "
            f"moving their new secret {pending(path)} to {path} ({SETTING}): move it there, "
            "then run `crm-pipeline rekey` to finish."
        )
    if value is None:
        raise KeySecretError(
            f"The warehouse's customer keys were made with a secret this run reads from {path} "
            f"({SETTING}, by default customer_key.secret beside the warehouse), and there is no "
            f"such file. Point {SETTING} at the file the keys were made with (every run must "
            "read the same one), or restore it there from your backup; only if it is lost, "
            "`crm-pipeline rekey --new-secret` gives every customer a new key with a new secret."
        )
    if not hmac.compare_digest(check_value(value), recorded):
        raise KeySecretError(
            f"The customer key secret {path} ({SETTING}) is not the one the warehouse's keys "
            "were made with. Restore that file (or point the setting at it); if it is lost, "
            "`crm-pipeline rekey --new-secret` gives every customer a new key with a new "
            "secret."
        )


def key_secret(conn: duckdb.DuckDBPyConnection, path: Path) -> KeySecret:
    """The secret to make the warehouse's new keys with: the one its keys were made with. A
    warehouse that records none gets the file's, or a new one (the file made), and records
    it (in the caller's transaction), noting whether it already held keys."""
    recorded = _recorded(conn)
    value = read(path)
    if recorded is not None:
        check, before, files = recorded
        _verify(check, value, path)
        secret = KeySecret(value, before, files)
        record(conn, secret)  # in this version's columns
        return secret
    before = table_exists(conn, "core.customer_crosswalk") and bool(
        conn.execute("SELECT count(*) FROM core.customer_crosswalk").fetchone()[0]
    )
    secret = KeySecret(value if value is not None else create(path), keys_before_secret=before)
    record(conn, secret)
    return secret


def replace_keys(
    conn: duckdb.DuckDBPyConnection, path: Path, new_secret: bool, now: datetime
) -> tuple[int, int] | None:
    """Give every customer the keyed key a rebuild would give it (keys.rekey), with the
    warehouse's secret, or with a new one (`new_secret`: made in `pending(path)`, moved to
    `path` once the keys are in, with the old file's permissions), and record that the files
    are still to be rewritten (files_written, once they are). How many keys of customers and
    retired keys were replaced; None when no key needs it."""
    if new_secret:
        fresh = pending(path)
        fresh.unlink(missing_ok=True)
        value = create(fresh)
    else:
        current = key_secret(conn, path)
        if not current.keys_before_secret:
            return None
        value = current.value
    conn.begin()
    changed = rekey(conn, value, now)
    record(conn, KeySecret(value, files_pending=True))
    conn.commit()
    if new_secret:
        replace_file(fresh, path.resolve())
    return changed


def files_written(conn: duckdb.DuckDBPyConnection) -> None:
    """Record that no old key is left in the warehouse file, the published copy or the
    report."""
    conn.execute(f"UPDATE {SCHEME_TABLE} SET files_pending = false")
