"""The benchmark: generate a scale, then time the floor (reading every input once) and each layer.

Each layer runs in its own process, so its wall time and peak RSS are its own; staging and
core run as one process, as a full run carries them (the issue's figure is the two together),
and each reports the time of its steps in it. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb

from crm_pipeline import landing
from crm_pipeline.core.crosswalk import pairwise_scores
from crm_pipeline.resources import LandingZoneResource
from crm_pipeline.run import landing_days

# Layers in the order they run; each is timed as one `materialize --select group:<layer>` run.
LAYERS = ("raw", "staging", "core", "analytics", "mining")
# Not a layer: a daily run (every asset, the last day's partitions) after the layers.
DAILY = "daily"


def _timed(command: list[str], env: dict[str, str]) -> dict:
    """Run a command as a child process; its wall time, its own peak RSS and, if its last
    output line is a JSON object, the figures in it."""
    start = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark step failed: {' '.join(command)}")
    figures = {"wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}
    last = output.strip().splitlines()[-1:] or [""]
    if last[0].startswith("{") and last[0].endswith("}"):
        figures |= json.loads(last[0])
    return figures


def read_inputs_once(root: str) -> None:
    """The floor: DuckDB reads every landing file once with the contract's columns (no
    sniffing), and counts each shop table's rows as ADBC fetches them from SQLite in Arrow
    batches of the columns' own types (the fastest bulk read of the shop there is here)."""
    import adbc_driver_sqlite.dbapi as adbc_sqlite

    from crm_pipeline.raw.shop_fetch import read_only_uri

    start = time.perf_counter()
    conn = duckdb.connect()
    conn.execute("SET enable_progress_bar = false")
    for source in landing.DAILY_FILE_SOURCES + landing.REFERENCE_FILES:
        files = f"{root}/{source.folder}/{'*/' if source.daily else ''}{source.pattern}"
        columns = {c: "VARCHAR" for c in source.columns}
        if source is landing.INQUIRIES:
            reader = "read_json(?, format = 'newline_delimited', ignore_errors = true, columns = ?)"
        else:
            reader = (
                "read_csv(?, columns = ?, header = true, auto_detect = false, ignore_errors = true)"
            )
        conn.execute(f"SELECT count(*) FROM {reader}", [files, columns]).fetchall()
    files = time.perf_counter() - start
    with adbc_sqlite.connect(read_only_uri(str(Path(root) / landing.SHOP_DATABASE_FILE))) as shop:
        for table in landing.SHOP_TABLES:
            with shop.cursor() as cursor:
                cursor.execute(f"SELECT {', '.join(table.columns)} FROM {table.name}")
                conn.register("shop_batches", cursor.fetch_record_batch())
                conn.execute("SELECT count(*) FROM shop_batches").fetchall()
                conn.unregister("shop_batches")
    shop_s = time.perf_counter() - start - files
    print(json.dumps({"duckdb_files_s": round(files, 2), "shop_via_adbc_s": round(shop_s, 2)}))


def _daily_run(bin_dir: Path, env: dict[str, str], last: str) -> dict:
    """Time what the daily schedule runs on a warehouse holding every day but the last: every
    asset, the event sources for the last delivered day only; with each layer's time and the
    slowest steps."""
    command = [str(bin_dir / "crm-pipeline"), "materialize", "--first", last, "--last", last]
    command.append("--timings")
    return _timed(command, env) | {"day": last}


# Layers timed as one run, as a full run carries them: issue 3's figure is cleaning plus
# identity plus core, so they pay Python's and Dagster's start-up once, as in production.
TOGETHER = ("staging", "core")


def _phases(layers: list[str]) -> list[tuple[str, ...]]:
    """Each layer in a run of its own; staging and core in one when both are timed."""
    phases = []
    for layer in layers:
        if layer == TOGETHER[1] and TOGETHER[0] in layers:
            continue
        phases.append(TOGETHER if layer == TOGETHER[0] and TOGETHER[1] in layers else (layer,))
    return phases


def _phase_names(layers: tuple[str, ...]) -> list[str]:
    return ["+".join(phase) for phase in _phases(list(layers))]


def _layer_figures(
    env: dict[str, str],
    root: Path,
    report: dict,
    layer: str,
    run: dict | None,
    seconds: float,
    floor: dict,
) -> dict:
    """One layer's figures: its run's wall time and peak RSS when it ran alone (`run`), and
    its steps' time; the rows it wrote (and, after raw and core, the order lines and the
    identity scores)."""
    figures = {**(run or {}), "steps_s": seconds}
    with duckdb.connect(env["CRM_WAREHOUSE"], read_only=True) as conn:
        rows = (
            conn.execute(
                """
                SELECT sum(estimated_size)
                FROM duckdb_tables()
                WHERE schema_name = ?
                """,
                [layer],
            ).fetchone()[0]
            or 0
        )
        if layer == "raw":
            report["order_lines"] = conn.execute(
                "SELECT (SELECT count(*) FROM raw.online_order_items)"
                " + (SELECT count(*) FROM raw.store_purchases)"
            ).fetchone()[0]
        if layer == "core":
            truth = landing.ground_truth_dir_for(str(root)) / "identities.csv"
            report["identity"] = pairwise_scores(conn, truth)
    took = figures.get("wall_s", seconds)
    figures["rows"] = int(rows)
    figures["rows_per_s"] = round(rows / took) if took else None
    figures["x_floor"] = round(took / floor["wall_s"], 2) if floor["wall_s"] else None
    return figures


def run_bench(args: argparse.Namespace) -> int:
    work = Path(args.workdir).resolve()
    root = work / "landing"
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "CRM_LANDING_DIR": str(root),
        "CRM_WAREHOUSE": str(work / "warehouse.duckdb"),
        "CRM_SHOP_URL": "",
        "DAGSTER_HOME": str(work / "dagster_home"),
    }
    report: dict = {"customers": args.customers, "days": args.days}
    if not args.reuse or not (root / landing.SHOP_DATABASE_FILE).exists():
        report["generate"] = _timed(
            [
                str(bin_dir / "crm-pipeline"),
                "generate",
                "--out",
                str(root),
                "--customers",
                str(args.customers),
                "--days",
                str(args.days),
            ],
            env,
        )
    layers = tuple(args.layers.split(",")) if args.layers else LAYERS
    unknown = set(layers) - set(LAYERS) - {DAILY}
    if unknown:
        raise SystemExit(
            f"--layers: unknown {sorted(unknown)}; choose from {', '.join((*LAYERS, DAILY))}"
        )
    if not args.layers:
        for leftover in work.glob("warehouse.duckdb*"):
            leftover.unlink()
    floor = _timed(
        [
            sys.executable,
            "-c",
            f"from crm_pipeline.bench import read_inputs_once; read_inputs_once({str(root)!r})",
        ],
        env,
    )
    report["floor_read_inputs"] = floor
    # With a daily run to time, the layers leave the last delivered day to it: it then loads
    # a day that is new, as the schedule's runs do.
    days = landing_days(LandingZoneResource(root=str(root))) if DAILY in layers else []
    if DAILY in layers and len(days) < 2:
        raise SystemExit(
            f"--layers {DAILY}: needs two delivered days or more, {root} has {len(days)}"
        )
    until = ["--last", days[-2]] if days else []
    for phase in _phases([layer for layer in layers if layer != DAILY]):
        selection = " or ".join(f"group:{layer}" for layer in phase)
        step = _timed(
            [
                str(bin_dir / "crm-pipeline"),
                "materialize",
                "--select",
                selection,
                "--no-publish",  # a layer's time is its own; the daily run publishes once
                "--timings",
                *until,
            ],
            env,
        )
        seconds = step.pop("layer_seconds")
        if len(phase) > 1:
            report["+".join(phase)] = dict(step)
        alone = step if len(phase) == 1 else None
        for layer in phase:
            report[layer] = _layer_figures(env, root, report, layer, alone, seconds[layer], floor)
    if DAILY in layers:
        report[DAILY] = _daily_run(bin_dir, env, days[-1])
        full = [report[phase]["wall_s"] for phase in _phase_names(LAYERS) if phase in report]
        if len(full) == len(_phase_names(LAYERS)):
            report["daily_share_of_full"] = round(report[DAILY]["wall_s"] / sum(full), 3)
            # Which part of the daily run is the new partition's event data and which the
            # customer-level recompute (start-up and run set-up, the rest, are neither).
            report["daily_parts_share_of_full"] = {
                part: round(seconds / sum(full), 3)
                for part, seconds in report[DAILY]["work_seconds"].items()
            }
    print(json.dumps(report, indent=2))
    return 0
