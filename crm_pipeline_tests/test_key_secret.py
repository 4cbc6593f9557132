"""Customer keys made with a secret kept outside the warehouse: nobody holding only the
sources' ids can recompute them, a rebuild with the secret gives them again, a run without it
stops, and `crm-pipeline rekey` replaces keys made without it everywhere they are held."""

from __future__ import annotations

import hashlib
import hmac
import shutil
import stat
from pathlib import Path

import duckdb
import pytest

from crm_pipeline.cli import main
from crm_pipeline.generate import generate
from crm_pipeline_tests.conftest import tables_quoting

# What a rebuild needs to give keys: the crosswalk and what it reads.
UP_TO_KEYS = ("--select", "+key:core/customer_crosswalk", "--no-publish")
CROSSWALK = "SELECT source, source_id, customer_key FROM core.customer_crosswalk ORDER BY ALL"
ANCHORS = """
    SELECT customer_key,
           first(source || ':' || source_id ORDER BY seen_at NULLS LAST, source, source_id)
    FROM core.customer_crosswalk GROUP BY ALL
"""


def _command(*args: str) -> int:
    with pytest.raises(SystemExit) as exit_code:
        main(list(args))
    return exit_code.value.code


def _rows(warehouse: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        return conn.execute(sql).fetchall()


def _key(secret: Path, anchor: str) -> str:
    digest = hmac.new(secret.read_text().strip().encode(), f"{anchor}#0".encode(), hashlib.sha256)
    return "C" + digest.hexdigest()[:16].upper()


def _unkeyed(warehouse: Path, secret: Path) -> list[str]:
    """The customers whose key is not the keyed hash of their earliest record."""
    return [k for k, anchor in _rows(warehouse, ANCHORS) if k != _key(secret, anchor)]


def _holders(warehouse: Path) -> dict[str, list[tuple]]:
    """Every table holding customer keys, its rows sorted."""
    tables = _rows(
        warehouse,
        "SELECT DISTINCT schema_name || '.' || table_name FROM duckdb_columns() "
        "WHERE column_name IN ('customer_key', 'retired_key', 'surviving_key') "
        "AND schema_name <> 'main' ORDER BY 1",
    )
    # Customers left out, and the targets of opportunities, are named by key.
    tables += [("core.excluded_rows",), ("mining.opportunities",)]
    return {t: sorted(_rows(warehouse, f"FROM {t}"), key=repr) for (t,) in tables}


@pytest.fixture(scope="module")
def zone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("keys") / "landing"
    generate(root, customers=150, days=21, seed=7, defect_rate=0.05)
    return root


@pytest.fixture
def at(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, zone: Path):
    """Point the commands at a warehouse in a folder of tmp_path; returns its path."""
    monkeypatch.setenv("CRM_LANDING_DIR", str(zone))
    monkeypatch.delenv("CRM_SHOP_URL", raising=False)
    monkeypatch.delenv("CRM_PUBLISHED", raising=False)
    monkeypatch.delenv("CRM_KEY_SECRET_FILE", raising=False)

    def point(folder: str) -> Path:
        warehouse = tmp_path / folder / "warehouse.duckdb"
        monkeypatch.setenv("CRM_WAREHOUSE", str(warehouse))
        return warehouse

    return point


def test_keys_are_keyed_with_a_secret_the_warehouse_does_not_hold(at, monkeypatch, capsys) -> None:
    first = at("first")
    assert _command("materialize") == 0
    assert "keys_keyed" not in capsys.readouterr().out
    secret = first.with_name("customer_key.secret")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert _rows(first, "SELECT count(DISTINCT customer_key) FROM core.customers")[0][0] > 100
    assert _unkeyed(first, secret) == []
    # Neither the warehouse nor the copy analysts read holds the secret.
    for copy in (first, first.with_name("published.duckdb")):
        assert tables_quoting(copy, [secret.read_text().strip()]) == []

    # A rebuild from scratch with the secret gives every record its key again.
    monkeypatch.setenv("CRM_KEY_SECRET_FILE", str(secret))
    again = at("again")
    assert _command("materialize", *UP_TO_KEYS) == 0
    assert _rows(again, CROSSWALK) == _rows(first, CROSSWALK)
    # With another secret, other keys.
    monkeypatch.delenv("CRM_KEY_SECRET_FILE")
    other = at("other")
    assert _command("materialize", *UP_TO_KEYS) == 0
    keys = {k for (_, _, k) in _rows(first, CROSSWALK)}
    assert not keys & {k for (_, _, k) in _rows(other, CROSSWALK)}

    # A run without the secret, or with another, stops before it gives a key.
    at("first")
    shutil.move(secret, secret.with_name("elsewhere"))
    assert _command("materialize", "--no-publish") == 1
    stopped = capsys.readouterr()
    for said in (str(secret), "CRM_KEY_SECRET_FILE", "restore it there from your backup", "rekey"):
        assert said in stopped.out + stopped.err
    monkeypatch.setenv("CRM_KEY_SECRET_FILE", str(other.with_name("customer_key.secret")))
    assert _command("materialize", "--no-publish") == 1
    assert "is not the one the warehouse's keys were made with" in "".join(capsys.readouterr())
    assert {k for (_, _, k) in _rows(first, CROSSWALK)} == keys


def test_rekey_replaces_keys_made_without_the_secret_everywhere(at, monkeypatch, capsys) -> None:
    warehouse = at("legacy")
    assert _command("materialize") == 0
    secret = warehouse.with_name("customer_key.secret")
    # As a warehouse from before keyed hashing: no record, keys no secret here gives, and a
    # merge found by an earlier load (a key retired).
    with duckdb.connect(str(warehouse)) as conn:
        conn.execute("DROP TABLE core.customer_key_scheme")
        conn.execute(
            "INSERT INTO core.customer_key_merges SELECT 'C00000000000000AA', min(customer_key), "
            "TIMESTAMP '2025-01-05' FROM core.customers"
        )
    secret.unlink()
    assert _command("materialize", *UP_TO_KEYS) == 0
    warned = capsys.readouterr().out
    assert "WARN  core/customer_crosswalk keys_keyed" in warned
    assert "Run `crm-pipeline rekey`" in warned
    # That run made the secret its new keys are made with, and later runs need it.
    shutil.move(secret, secret.with_name("elsewhere"))
    assert _command("materialize", *UP_TO_KEYS) == 1
    assert "restore it there from your backup" in "".join(capsys.readouterr())
    shutil.move(secret.with_name("elsewhere"), secret)
    old = _unkeyed(warehouse, secret)
    assert len(old) > 100
    retired = [k for (k,) in _rows(warehouse, "SELECT retired_key FROM core.customer_key_merges")]
    before = _holders(warehouse)
    records = {(s, i): k for s, i, k in _rows(warehouse, CROSSWALK)}  # each record's old key

    # A rekey whose tables are done but whose publish fails (no folder for the copy) ...
    monkeypatch.setenv("CRM_PUBLISHED", str(secret / "published.duckdb"))
    assert _command("rekey") == 2
    assert "`crm-pipeline rekey` runs again, which finishes this step" in capsys.readouterr().err
    assert _unkeyed(warehouse, secret) == []
    monkeypatch.delenv("CRM_PUBLISHED")
    # ... leaves runs warning, until a rekey finishes it.
    assert _command("materialize", *UP_TO_KEYS) == 0
    assert "run `crm-pipeline rekey` again to finish" in capsys.readouterr().out
    assert _command("rekey") == 0
    assert "Finished an earlier rekey: the warehouse" in capsys.readouterr().out
    # Both files say so, the copy analysts read too.
    for copy in (warehouse, warehouse.with_name("published.duckdb")):
        scheme = "SELECT files_pending FROM core.customer_key_scheme"
        assert _rows(copy, scheme) == [(False,)], copy
    renamed = {records[(s, i)]: k for s, i, k in _rows(warehouse, CROSSWALK)}
    assert len(set(renamed.values())) == len(renamed)
    # A retired key becomes a keyed hash of itself.
    renamed |= {r: _key(secret, f"retired:{r}") for r in retired}
    # Every table holds the same rows, each old key replaced by its new one.
    after = _holders(warehouse)
    assert set(after) == set(before)
    for table in ("core.order_lines", "core.customer_key_merges", "mining.recommendations"):
        assert after[table], table
    for table, rows in before.items():
        mapped = sorted((tuple(renamed.get(v, v) for v in row) for row in rows), key=repr)
        assert mapped == after[table], table
    # No old key is left in the warehouse or the published copy, nor in their files' bytes.
    for copy in (warehouse, warehouse.with_name("published.duckdb")):
        assert tables_quoting(copy, old + retired) == [], copy
        data = copy.read_bytes()
        assert not [k for k in old if k.encode() in data], copy
    report = warehouse.with_name("report.html").read_text()
    assert not [k for k in old if k in report]
    assert [k for k in renamed.values() if k in report]

    # The next run keeps the keys and has nothing to warn about; a rebuild with the secret
    # from scratch gives the same keys.
    rekeyed = _rows(warehouse, CROSSWALK)
    assert _command("materialize", *UP_TO_KEYS) == 0
    assert "keys_keyed" not in capsys.readouterr().out
    assert _rows(warehouse, CROSSWALK) == rekeyed
    assert _command("rekey") == 0
    assert "already made with the secret" in capsys.readouterr().out
    monkeypatch.setenv("CRM_KEY_SECRET_FILE", str(secret))
    rebuilt = at("rebuilt")
    assert _command("materialize", *UP_TO_KEYS) == 0
    assert _rows(rebuilt, CROSSWALK) == rekeyed


def test_rekey_with_a_new_secret_after_one_is_lost_or_leaked(at, monkeypatch, capsys) -> None:
    warehouse = at("rotated")
    assert _command("materialize", *UP_TO_KEYS) == 0
    secret = warehouse.with_name("customer_key.secret")
    leaked = secret.with_name("leaked.secret")
    shutil.copy(secret, leaked)
    secret.chmod(0o640)  # shared with a service's group
    keys = {k for (_, _, k) in _rows(warehouse, CROSSWALK)}
    assert _command("rekey", "--new-secret") == 0
    assert f"{len(keys)} customer keys and 0 retired keys replaced" in capsys.readouterr().out
    assert secret.read_text() != leaked.read_text()
    assert stat.S_IMODE(secret.stat().st_mode) == 0o640
    assert not secret.with_name("customer_key.secret.new").exists()
    assert _unkeyed(warehouse, secret) == []
    assert not keys & {k for (_, _, k) in _rows(warehouse, CROSSWALK)}
    # The old secret no longer makes this warehouse's keys.
    monkeypatch.setenv("CRM_KEY_SECRET_FILE", str(leaked))
    assert _command("materialize", "--no-publish") == 1
    assert "is not the one" in "".join(capsys.readouterr())
    monkeypatch.delenv("CRM_KEY_SECRET_FILE")
    assert _command("materialize", *UP_TO_KEYS) == 0
