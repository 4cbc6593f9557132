"""The crm-pipeline command: generate demo data, materialize everything, summarise, erase a
customer's personal data, benchmark."""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from crm_pipeline import SettingError, iso_day, privacy_commands


@contextmanager
def _imports(own_process: bool) -> Iterator[None]:
    """Importing dagster, pandas and the assets makes over a million objects, which Python's
    cyclic collector would walk again and again meanwhile. In a process of its own (the
    console script) none runs while importing, and the objects are frozen after, so later
    collections skip them (0.5 s off every start). Called from another program (a test), the
    collector is left alone: freezing would keep that program's garbage for good."""
    if not own_process:
        yield
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def _materialize(args: argparse.Namespace) -> int:
    with _imports(args.own_process):
        import dagster as dg
        import sqlalchemy as sa

        from crm_pipeline.definitions import definitions
        from crm_pipeline.failures import safe_url
        from crm_pipeline.partitions import FIRST_DAY
        from crm_pipeline.publish import KEY as PUBLISHED
        from crm_pipeline.raw.shop import ShopSchemaError
        from crm_pipeline.resources import COMMAND_PID_TAG, resources_from_env
        from crm_pipeline.run import (
            DEFAULT_DAGSTER_HOME,
            any_partitioned,
            causes_once,
            check_finding,
            config_problem,
            failure_messages,
            landing_days,
            layer_seconds,
            materialize_all,
            prepare_instance,
            range_problem,
            selected_keys,
            setting_config,
            settings_refused,
            shop_only_start,
            slowest_steps,
            sole_writer_refusal,
            step_seconds,
            work_seconds,
        )

    # Bound now, not at import: the environment may have changed since (a test, a notebook).
    # The run's resources read the environment when they start (EnvVar): a value in the run's
    # job snapshot is stored for good, and CRM_SHOP_URL may hold a password. The command's own
    # reads (the shop's order days) use the values.
    bound = resources_from_env(resolve=True)
    defs = definitions(resources_from_env())
    # A bad setting is refused before anything runs.
    problem = (
        config_problem(defs, setting_config(args.set or []))
        or (bound["warehouse"].published_problem() if args.publish else None)
        or sole_writer_refusal(args.held, bound["warehouse"].path, "materialize")
    )
    if problem:
        print(problem, file=sys.stderr)
        return 2
    first = last = None
    try:
        keys = selected_keys(defs, args.select)
    except dg.DagsterError as error:
        print(
            f"--select {args.select!r} is not a selection of assets ({error}). Name assets "
            "as in the UI: 'key:raw/products', 'group:mining', joined with 'or'.",
            file=sys.stderr,
        )
        return 2
    if not keys:
        print(
            f"--select {args.select!r} matches no asset. Groups are raw, staging, core, "
            "analytics, mining and warehouse; keys are written schema/table, such as "
            "'key:core/customers'.",
            file=sys.stderr,
        )
        return 2
    # Analysts read the published copy: a run of some assets updates it too, unless told not.
    selection: list[dg.AssetKey] | None = None
    if args.select or not args.publish:
        selection = [k for k in keys if k != PUBLISHED] + ([PUBLISHED] if args.publish else [])
    partitioned = any_partitioned(defs, keys)
    if partitioned and args.first and args.last:
        first, last = args.first, args.last
    elif partitioned:
        # The delivered days (a scan of the shop's orders) fill in what the command was not told.
        zone = bound["landing_zone"]
        try:
            days = landing_days(zone)
        except ShopSchemaError as error:
            print(error, file=sys.stderr)
            return 2
        except sa.exc.SQLAlchemyError as error:
            cause = getattr(error, "orig", None) or error
            print(
                f"Cannot list the order days of the online shop database "
                f"{safe_url(zone.database_url)}: {type(error).__name__}: {cause}. "
                "Check that it is reachable and CRM_SHOP_URL points at it.",
                file=sys.stderr,
            )
            return 2
        if not days:
            print(
                f"No delivery days from {FIRST_DAY} (CRM_FIRST_DAY) to yesterday found in "
                f"{zone.root} or {safe_url(zone.database_url)}: run `crm-pipeline generate`, "
                "set CRM_LANDING_DIR / CRM_SHOP_URL, or set CRM_FIRST_DAY to the first "
                "delivery day.",
                file=sys.stderr,
            )
            return 2
        if not args.first and (problem := shop_only_start(zone, days)):
            print(problem, file=sys.stderr)
            return 2
        first, last = args.first or days[0], args.last or days[-1]
    if first:
        problem = range_problem(
            first, last, defaulted_first=not args.first, defaulted_last=not args.last
        )
        if problem:
            print(problem, file=sys.stderr)
            return 2
    # Dagster's SQLite run storage writes one event per asset per day of the range, which
    # costs about a minute for a year of days; an in-memory instance keeps `make run` quick.
    if args.record:
        instance = prepare_instance(Path(os.environ.get("DAGSTER_HOME", DEFAULT_DAGSTER_HOME)))
    else:
        instance = dg.DagsterInstance.ephemeral()
        # Dagster's opt-in for wide single-run backfills: the run plans one event per asset for
        # its range of days, not one per asset and day (2-3 s for a year). What it gives up, the
        # days of a failed run marked failed in the instance, goes with this instance anyway.
        os.environ.setdefault("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "true")
    what = "every asset" if not args.select else args.select
    print(
        f"Materializing {what}, event sources over {first}..{last} (one run)"
        if first
        else f"Materializing {what} (no partitioned asset among them)"
    )
    try:
        # A recorded run is marked as this command's: a run of the UI it holds up in the
        # warehouse pool does not wait for it (WarehouseResource.wait_for_command).
        mark = {COMMAND_PID_TAG: str(os.getpid())} if args.record else None
        result = materialize_all(defs, instance, first, last, selection, args.set, mark)
    except dg.DagsterInvalidConfigError as error:
        print(settings_refused(error), file=sys.stderr)
        return 2
    failed_checks = []
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            level = evaluation.severity.value
            head, *found = check_finding(evaluation)
            print(f"  {level:5} {head}")
            for line in found:  # what a blocking check found, after its summary
                print(f"        {line}")
            if level == "ERROR":
                failed_checks.append(evaluation)
    if not result.success:
        for message in causes_once(failure_messages(result)):
            print(f"  FAILED {message}", file=sys.stderr)
        return 1
    print(f"Run {result.run_id} succeeded" + (" with failed checks" if failed_checks else ""))
    # In the same process: `make run` then pays Python's start-up once.
    if args.dictionary:
        _dictionary(argparse.Namespace(out=args.dictionary))
    if args.summary:
        _summary(args)
    if args.timings:
        steps = step_seconds(instance, result.run_id)
        print(
            json.dumps(
                {
                    "layer_seconds": layer_seconds(steps),
                    "work_seconds": work_seconds(steps),
                    "slowest_steps": slowest_steps(steps),
                }
            )
        )
    return 1 if failed_checks else 0


def _summary(args: argparse.Namespace) -> int:
    from crm_pipeline.dictionary import holds_delivered_records, stored_types
    from crm_pipeline.resources import resources_from_env
    from crm_pipeline.run import warehouse_summary

    warehouse = resources_from_env(resolve=True)["warehouse"]
    path = warehouse.path
    published = warehouse.published_path()
    readable = str(published) if published.exists() else path
    if not Path(path).exists():
        print(f"No warehouse at {path}: run `make run` first.", file=sys.stderr)
        return 2
    print(f"\nWarehouse: {Path(path).resolve()}\n")
    rows = warehouse_summary(path)
    width = max(len(name) for name, _ in rows)
    for name, count in rows:
        print(f"  {name:<{width}}  {count:>12,}")
    # What the copy holds, read from it: one published whole (by the setting, or by a version
    # from before the pseudonymous copy) holds personal data until the next publish.
    whole = published.exists() and holds_delivered_records(stored_types(str(published)))
    content = (
        "the whole warehouse, personal data included"
        if whole
        else "no personal data: personal columns empty, the delivered records and the "
        "identity crosswalk left out"
    )
    if published.exists() and whole != warehouse.publishes_whole():
        setting = "whole" if warehouse.publishes_whole() else "pseudonymous"
        content += f"; the next run publishes it {setting}, as CRM_PUBLISHED_CONTENT says"
    intro = (
        f"Query the published copy (read-only; swapped in after each good run; {content})"
        if published.exists()
        else "No published copy yet (a run whose checks pass publishes one); query the "
        "warehouse itself, read-only (it holds personal data)"
    )
    print(
        f"\n{intro}: {readable}\n"
        f'  .venv/bin/duckdb -readonly {readable} -c "FROM analytics.scored_customers LIMIT 5"\n'
        f'  .venv/bin/python -c "import duckdb; '
        f"print(duckdb.connect('{readable}', read_only=True).sql('FROM analytics.scored_customers LIMIT 5'))\"\n"
        "  Where every delivered row went: FROM core.quality_report\n"
        "  Rows set aside, and why: FROM quarantine.raw_rejects, FROM quarantine.staging_rejects\n"
        "  Every customer's scores: FROM analytics.scored_customers; next products: "
        "FROM mining.recommendations; where to grow: FROM mining.opportunities\n"
    )
    report = Path(path).resolve().with_name("report.html")
    if report.exists():
        print(f"Report (open it in a browser): {report}\n")
    return 0


def _dictionary(args: argparse.Namespace) -> int:
    from crm_pipeline.dictionary import data_dictionary
    from crm_pipeline.resources import resources_from_env

    # The published copy, which no run holds (a run may be writing the warehouse itself).
    warehouse = resources_from_env(resolve=True)["warehouse"]
    published = warehouse.published_path()
    text = data_dictionary(str(published) if published.exists() else None)
    if args.out:
        kept = (Path(warehouse.path), published, warehouse.key_secret_path())
        if Path(args.out).resolve() in {path.resolve() for path in kept}:
            print(
                f"--out {args.out} is the warehouse, its published copy or its key secret: "
                "name a Markdown file, such as data_dictionary.md.",
                file=sys.stderr,
            )
            return 2
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"Data dictionary: {Path(args.out).resolve()}")
    else:
        print(text)
    return 0


def _generate(args: argparse.Namespace) -> int:
    from crm_pipeline.generate import run_from_args

    run_from_args(args)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from crm_pipeline.bench import run_bench

    return run_bench(args)


def _day(text: str) -> str:
    """A day given on the command line, checked: YYYY-MM-DD."""
    try:
        return iso_day(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a day as YYYY-MM-DD, such as 2025-03-01"
        ) from None


def main(argv: list[str] | None = None, own_process: bool = False) -> None:
    """The crm-pipeline command. own_process: the process runs nothing else (the console
    script), so Python's garbage collector may be tuned for it."""
    parser = argparse.ArgumentParser(prog="crm-pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="write a realistic, dirty demo landing zone")
    from crm_pipeline.generate import add_arguments

    add_arguments(generate)
    generate.set_defaults(handler=_generate)

    materialize = commands.add_parser("materialize", help="materialize every asset in one run")
    materialize.add_argument(
        "--first", type=_day, help="first partition day, YYYY-MM-DD (default: first day delivered)"
    )
    materialize.add_argument(
        "--last", type=_day, help="last partition day, YYYY-MM-DD (default: last day delivered)"
    )
    materialize.add_argument("--select", help="asset selection, e.g. 'group:raw' (default: all)")
    materialize.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="RESOURCE.FIELD=VALUE",
        help="a setting of the analysis, mining or core_rules resource for this run, such as "
        "analysis.as_of=2025-06-30 or mining.refit_days=0 (repeatable)",
    )
    materialize.add_argument(
        "--no-publish",
        dest="publish",
        action="store_false",
        help="leave the published copy as it is (by default a run publishes, a run of a "
        "--select too, once its assets and blocking checks pass)",
    )
    materialize.add_argument(
        "--record",
        action="store_true",
        help="record the run in DAGSTER_HOME so the UI shows it (slower: one event per day)",
    )
    materialize.add_argument(
        "--summary", action="store_true", help="then print the tables and row counts"
    )
    materialize.add_argument("--dictionary", help="then write the data dictionary here")
    materialize.add_argument(
        "--timings",
        action="store_true",
        help="then print each layer's time in the run as JSON (its steps, start-up left out)",
    )
    materialize.set_defaults(handler=_materialize)

    summary = commands.add_parser("summary", help="print the warehouse's tables and row counts")
    summary.set_defaults(handler=_summary)

    dictionary = commands.add_parser("dictionary", help="every table, its grain and columns")
    dictionary.add_argument("--out", help="write Markdown here instead of printing it")
    dictionary.set_defaults(handler=_dictionary)

    erase = commands.add_parser(
        "erase", help="erase customers' personal data from the warehouse and later loads"
    )
    for flag, what in (
        ("--customer-key", "a customer key"),
        ("--email", "an email, as any source wrote it"),
        ("--phone", "a phone number, in any format"),
        ("--account-id", "an online shop account id"),
        ("--card", "a loyalty card number"),
    ):
        erase.add_argument(flag, action="append", default=[], help=f"{what} (repeatable)")
    erase.add_argument("--reason", required=True, help="why (a ticket number), kept in the log")
    erase.add_argument(
        "--all-matching",
        action="store_true",
        help="erase every customer an email or phone matches (without it, an email or phone "
        "that several customers share erases nobody and lists them)",
    )
    erase.set_defaults(handler=privacy_commands.erase)

    rekey = commands.add_parser(
        "rekey",
        help="replace every customer key by one keyed with the secret (after keys made before "
        "keyed hashing, or a lost or leaked secret with --new-secret)",
    )
    rekey.add_argument(
        "--new-secret",
        action="store_true",
        help="make a new secret and key every customer with it (the old one is no longer needed)",
    )
    rekey.set_defaults(handler=privacy_commands.rekey)

    bench = commands.add_parser("bench", help="time generation and every layer at a scale")
    bench.add_argument("--customers", type=int, default=100_000)
    bench.add_argument("--days", type=int, default=365)
    bench.add_argument("--workdir", default="data/bench")
    bench.add_argument("--reuse", action="store_true", help="keep an existing generated scale")
    bench.add_argument(
        "--layers",
        help="comma-separated layers to time, keeping the warehouse as it is (e.g. staging,core), "
        "and 'daily' for a daily run (every asset, the last day's partitions) after them; "
        "default: every layer on a fresh warehouse",
    )
    bench.set_defaults(handler=_bench)

    args = parser.parse_args(argv)
    args.own_process = own_process
    # What a command holds until it returns: the warehouse's lock, for those that write it.
    args.held = ExitStack()
    try:
        with args.held:
            status = args.handler(args)
    except SettingError as error:
        print(error, file=sys.stderr)
        status = 2
    if own_process:
        # Python's last collection at exit would walk every object still alive (about 1 s
        # after a run); frozen, they are skipped. Nothing waits on that collection:
        # connections and files are closed by then.
        gc.freeze()
    sys.exit(status)


def console() -> None:
    """The `crm-pipeline` console script: the command in a process of its own."""
    main(own_process=True)
