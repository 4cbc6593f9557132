"""The privacy commands of crm-pipeline: erase (a data subject's request) and rekey (customer
keys made anew with their secret). Each needs the warehouse to itself."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _setting_wrong(warehouse) -> bool:
    """Whether a setting the command ends with (what the published copy holds) is wrong, said
    on stderr: checked before anything changes, so a typo never leaves a request half done."""
    from crm_pipeline.failures import ActionableError

    try:
        warehouse.publishes_whole()
    except ActionableError as error:
        print(error, file=sys.stderr)
        return True
    return False


def _erasing_marker(warehouse_path: str) -> Path:
    """The file that says an erasure committed but its warehouse file is not yet rewritten."""
    path = Path(warehouse_path)
    return path.with_name(path.name + ".erasing")


def _rewritten_and_published(warehouse) -> tuple:
    """The warehouse file rewritten with its live data only, the published copy replaced and
    the data dictionary beside it written again (a failure of that last one is only said)."""
    from crm_pipeline import privacy
    from crm_pipeline.dictionary import refresh_beside
    from crm_pipeline.publish import publish

    privacy.rewrite_file(warehouse.path, warehouse.memory_limit, warehouse.storage_version)
    published = publish(warehouse)
    try:
        dictionary = refresh_beside(warehouse.path, warehouse.published_path())
    except OSError as error:  # the erasure is done: a stale dictionary is said, not fatal
        dictionary = None
        print(
            f"The data dictionary beside the warehouse could not be written again ({error}): "
            "run `crm-pipeline dictionary --out FILE` to update it.",
            file=sys.stderr,
        )
    return published, dictionary


def erase(args: argparse.Namespace) -> int:
    """crm-pipeline erase: a data subject's erasure request, then the published copy anew."""
    from datetime import UTC, datetime

    import duckdb

    from crm_pipeline import privacy
    from crm_pipeline.failures import ActionableError
    from crm_pipeline.resources import WarehouseUnavailable, resources_from_env
    from crm_pipeline.run import sole_writer_refusal
    from crm_pipeline.staging.staged_with import recorded_phone_regions

    named = {
        "customer_keys": tuple(args.customer_key),
        "emails": tuple(args.email),
        "phones": tuple(args.phone),
        "account_ids": tuple(args.account_id),
        "cards": tuple(args.card),
    }
    if not any(named.values()):
        print(
            "Name whom to erase: --customer-key, --email, --phone, --account-id or --card.",
            file=sys.stderr,
        )
        return 2
    warehouse = resources_from_env(resolve=True)["warehouse"]
    if _setting_wrong(warehouse):
        return 2
    if not Path(warehouse.path).exists():
        print(f"No warehouse at {warehouse.path}: nothing to erase.", file=sys.stderr)
        return 2
    if refused := (
        warehouse.published_problem() or sole_writer_refusal(args.held, warehouse.path, "erase")
    ):
        print(refused, file=sys.stderr)
        return 2
    marker = _erasing_marker(warehouse.path)
    finished = marker.exists()
    if finished:
        # An erasure stopped after its commit: its values are gone from the tables but not
        # yet from the file's free blocks, nor from a published copy.
        try:
            _rewritten_and_published(warehouse)
        except (OSError, duckdb.Error, WarehouseUnavailable) as error:
            print(
                f"An earlier erasure stopped before the warehouse file was rewritten ({marker} "
                f"is there), and finishing it failed: {error}. Run `crm-pipeline erase` again "
                "once the cause is fixed.",
                file=sys.stderr,
            )
            return 2
        marker.unlink()
        print(
            "Finished the erasure stopped earlier: the warehouse file "
            f"{Path(warehouse.path).resolve()} is rewritten and the published copy replaced."
        )
    try:
        with warehouse.connect() as conn:
            # A phone is read as staging read the warehouse's, whatever this shell's setting.
            regions = recorded_phone_regions(conn) or warehouse.phone_region_codes()
            request = privacy.Request(**named, phone_regions=regions)
            keys = privacy.customers_of(conn, request)
            if not keys:
                if finished:
                    print("No customer in the warehouse matches the request; nothing more erased.")
                    return 0
                print("No customer in the warehouse matches the request; nothing erased.")
                return 1
            shared = privacy.shared_contacts(conn, request)
            if shared and not args.all_matching:
                for given, owners in shared.items():
                    print(
                        f"{given} belongs to {len(owners)} customers: {', '.join(owners)}",
                        file=sys.stderr,
                    )
                print(
                    "Nothing erased. Name the one customer (--customer-key, --account-id, "
                    "--card), or pass --all-matching to erase every customer listed.",
                    file=sys.stderr,
                )
                return 2
            # Until the file is rewritten and published, the next erase finishes this one.
            marker.write_text(f"erasing: {args.reason}\n", encoding="utf-8")
            conn.begin()
            erasure = privacy.erase(conn, keys, args.reason, datetime.now(UTC).replace(tzinfo=None))
            conn.commit()
    except WarehouseUnavailable as error:
        print(f"{error} Then erase again.", file=sys.stderr)
        return 2
    except ActionableError as error:  # the phone countries: unknown, or staged two ways
        print(error, file=sys.stderr)
        return 2
    except duckdb.CatalogException as error:
        print(
            f"The warehouse {warehouse.path} has no customer model to erase from yet ({error}): "
            "run `crm-pipeline materialize` first.",
            file=sys.stderr,
        )
        return 2
    try:
        published, dictionary = _rewritten_and_published(warehouse)
    except (OSError, duckdb.Error, WarehouseUnavailable) as error:
        print(
            f"Request {erasure.request_id} is erased in the warehouse, but rewriting its file "
            f"or replacing the published copy failed: {error}. The old values may remain "
            "there until `crm-pipeline erase` runs again (any request, or this one), which "
            "finishes it first.",
            file=sys.stderr,
        )
        return 2
    marker.unlink(missing_ok=True)
    print(
        f"Erased request {erasure.request_id}: {len(erasure.customer_keys)} customer(s) "
        f"({', '.join(erasure.customer_keys)}), "
        f"{erasure.records} source record(s), in the warehouse {Path(warehouse.path).resolve()} "
        f"and the published copy {warehouse.published_path()} ({len(published.tables)} tables). "
        "Later loads blank these records again (raw.erased_records)."
        + (f" Data dictionary updated: {dictionary}." if dictionary else "")
    )
    if erasure.landing_files:
        print(
            "These deliveries still hold the records, or a line set aside in quarantine that "
            "quotes them; redact them at the source (a run of their days blanks the records "
            "again, but brings such a line back):"
        )
        for name in erasure.landing_files:
            print(f"  {name}")
    return 0


def rekey(args: argparse.Namespace) -> int:
    """crm-pipeline rekey: every customer key made anew with the secret (a new one with
    --new-secret), in every table, then the warehouse file rewritten and republished."""
    from datetime import UTC, datetime

    import duckdb

    from crm_pipeline import privacy
    from crm_pipeline.core.secret import (
        KeySecretError,
        files_written,
        key_secret,
        pending,
        replace_keys,
    )
    from crm_pipeline.mining.assets import write_report
    from crm_pipeline.publish import publish
    from crm_pipeline.raw.tables import table_exists
    from crm_pipeline.resources import WarehouseUnavailable, resources_from_env
    from crm_pipeline.run import sole_writer_refusal

    resources = resources_from_env(resolve=True)
    warehouse = resources["warehouse"]
    if _setting_wrong(warehouse):
        return 2
    path = warehouse.key_secret_path()
    if not Path(warehouse.path).exists():
        print(f"No warehouse at {warehouse.path}: no keys to replace.", file=sys.stderr)
        return 2
    if refused := (
        warehouse.published_problem() or sole_writer_refusal(args.held, warehouse.path, "rekey")
    ):
        print(refused, file=sys.stderr)
        return 2
    try:
        with warehouse.connect() as conn:
            if not table_exists(conn, "core.customer_crosswalk"):
                print(
                    f"The warehouse {warehouse.path} has no customers yet: its first run keys "
                    "them with the secret.",
                    file=sys.stderr,
                )
                return 2
            now = datetime.now(UTC).replace(tzinfo=None)
            replaced = replace_keys(conn, path, args.new_secret, now)
            if replaced is None and not key_secret(conn, path).files_pending:
                print(
                    f"Every customer key is already made with the secret in {path}: nothing to "
                    "do (--new-secret replaces the secret and every key)."
                )
                return 0
    except (WarehouseUnavailable, KeySecretError) as error:
        print(error, file=sys.stderr)
        return 2
    except duckdb.Error as error:
        print(f"The rekey stopped and no key changed: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # only moving a new secret into place is left to fail
        print(
            f"Every key is replaced, but the new secret could not be moved from {pending(path)} "
            f"to {path}: {error}. Move it there, then run `crm-pipeline rekey` again to finish.",
            file=sys.stderr,
        )
        return 2
    try:
        # The old keys stay in the file's free blocks until rewritten; a report names some.
        privacy.rewrite_file(warehouse.path, warehouse.memory_limit, warehouse.storage_version)
        report = Path(warehouse.path).with_name("report.html").exists()
        if report:
            write_report(warehouse, resources["analysis"])
        # The copy, written last, holds no old key either, and says so.
        published = publish(warehouse, settle=files_written)
        with warehouse.connect() as conn:
            files_written(conn)
    except (OSError, duckdb.Error, WarehouseUnavailable) as error:
        print(
            f"Every key is replaced in the warehouse's tables, but rewriting its file, replacing "
            f"the published copy or the report failed: {error}. The old keys remain there until "
            "`crm-pipeline rekey` runs again, which finishes this step (runs warn until then).",
            file=sys.stderr,
        )
        return 2
    done = (
        "Finished an earlier rekey"
        if replaced is None
        else f"{replaced[0]} customer keys and {replaced[1]} retired keys replaced by keys made "
        f"with the secret in {path}"
    )
    print(
        f"{done}: the warehouse {Path(warehouse.path).resolve()} is rewritten, the published copy "
        f"{warehouse.published_path()} ({len(published.tables)} tables)"
        f"{' and the report' if report else ''} replaced. Keys kept outside the warehouse (saved "
        f"queries, exports) no longer match: look customers up again. Back up {path} with the "
        "warehouse."
    )
    return 0
