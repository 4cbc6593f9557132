"""Running the whole pipeline from the command line: which days to load, and what came out."""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from contextlib import ExitStack
from pathlib import Path

import dagster as dg
import duckdb

from crm_pipeline import SettingError, landing
from crm_pipeline.partitions import FIRST_DAY, daily_partitions
from crm_pipeline.raw.shop import order_days
from crm_pipeline.resources import LandingZoneResource
from crm_pipeline.writer_lock import held_for

INSTANCE_TEMPLATE = Path(__file__).with_name("dagster.yaml")


def _folder_days(zone: LandingZoneResource) -> set[str]:
    """The days the daily file sources have a folder for."""
    found: set[str] = set()
    for source in landing.DAILY_FILE_SOURCES:
        folder = zone.path / source.folder
        if folder.is_dir():
            found |= {p.name for p in folder.iterdir() if p.is_dir()}
    return found


def landing_days(zone: LandingZoneResource) -> list[str]:
    """The partition days the landing zone holds data for: daily folders and shop order days."""
    keys = set(daily_partitions.get_partition_keys())
    found = _folder_days(zone) | {d for d in order_days(zone.database_url) if d}
    return sorted(found & keys)


def shop_only_start(zone: LandingZoneResource, days: list[str]) -> str | None:
    """Why a range starting at the first of the delivered `days` would fail, when only the
    shop has orders before the first day folder of the files (a mistyped order year, or a
    shop older than the file deliveries): the daily file sources have no folder for them."""
    keys = set(daily_partitions.get_partition_keys())
    files_from = min(_folder_days(zone) & keys, default=None)
    if not days or files_from is None or days[0] >= files_from:
        return None
    return (
        f"The delivered days start at {days[0]}, the day of the shop's earliest order, but the "
        f"daily files start at {files_from}: the file sources have no folder for the days "
        "between, and their loads would fail. If an order's date is mistyped, correct it in "
        f"the shop; to load from the files' first day, give --first {files_from} (or, for a "
        "shop older than the file deliveries, create an empty folder for each earlier day of "
        "each file source)."
    )


def range_problem(
    first: str, last: str, defaulted_first: bool = False, defaulted_last: bool = False
) -> str | None:
    """What is wrong with a range of partition days (YYYY-MM-DD) a run was asked for, in
    words that say what to give instead; None when every day of it is a partition."""
    start, end = (
        daily_partitions.get_first_partition_key(),
        daily_partitions.get_last_partition_key(),
    )
    if start is None or end is None:
        return (
            f"There is no partition day yet: days run from CRM_FIRST_DAY ({FIRST_DAY}) to "
            "yesterday. Set CRM_FIRST_DAY to the first delivery day."
        )
    told = {
        "first": " (the first day delivered)" if defaulted_first else "",
        "last": " (the last day delivered)" if defaulted_last else "",
    }
    if last < start:
        return (
            f"--last {last}{told['last']} is before the first partition day, {start} "
            "(CRM_FIRST_DAY): give a later last day, or set CRM_FIRST_DAY to an earlier one."
        )
    if first > end:
        return (
            f"--first {first}{told['first']} is after the last partition day, {end} "
            "(partitions end yesterday, UTC): give an earlier first day."
        )
    if first > last:
        return (
            f"--first {first}{told['first']} is after --last {last}{told['last']}: give a "
            "first day on or before the last."
        )
    if first < start:
        return (
            f"--first {first} is before the first partition day, {start} (CRM_FIRST_DAY): "
            "give a later first day, or set CRM_FIRST_DAY to an earlier one."
        )
    if last > end:
        return (
            f"--last {last} is after the last partition day, {end} (partitions end yesterday, "
            "UTC): give an earlier last day."
        )
    return None


def prepare_instance(home: Path) -> dg.DagsterInstance:
    """The Dagster instance in DAGSTER_HOME, created with the warehouse pool limit if new."""
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(INSTANCE_TEMPLATE, home / "dagster.yaml")
    return dg.DagsterInstance.from_config(str(home))


RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"

# Backfills still launching runs (requested; being cancelled or failing: their runs ending).
BACKFILLS_IN_FLIGHT = ("REQUESTED", "CANCELING", "FAILING")
# Runs that have not ended (queued, starting, started, being cancelled).
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.MANAGED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.SUSPENDED,
    dg.DagsterRunStatus.CANCELING,
]
DEFAULT_DAGSTER_HOME = "data/dagster_home"


def sole_writer_refusal(held: ExitStack, warehouse: str, command: str) -> str | None:
    """Take the warehouse's lock for `crm-pipeline <command>` until `held` closes, then look
    for runs of the instance: why the command must not run, or None. Held first, so a run that
    starts after the look waits for the command (WarehouseResource.wait_for_command)."""
    return held_for(held, warehouse, command) or runs_not_ended(command)


def runs_not_ended(command: str = "materialize") -> str | None:
    """Why `crm-pipeline <command>`, which writes the warehouse outside the run queue
    (materialize, erase, rekey), must wait: the runs of the Dagster instance in DAGSTER_HOME (a
    deployment's, or `make ui`'s) that have not ended, and its backfills still launching runs
    (between two of a backfill's runs none is under way), which would fail on its lock or
    publish half of theirs. None when there are none, or no instance there."""
    home = Path(os.environ.get("DAGSTER_HOME") or DEFAULT_DAGSTER_HOME)
    if not (home / "dagster.yaml").is_file():
        return None
    try:
        instance = dg.DagsterInstance.from_config(str(home))
    except Exception as error:  # noqa: BLE001 - whatever its storage says, said in a line
        unset = re.search(r'environment variable "(\w+)" which is not set', str(error))
        why = (
            f"it reads {unset[1]}, which is not set here"
            if unset
            else f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
        )
        return (
            f"Cannot read the Dagster instance in {home} ({why}), so cannot tell whether a "
            "run of it is under way: give this command the instance's settings too "
            "(DAGSTER_PG_URL for a deployment's), or point DAGSTER_HOME elsewhere."
        )
    try:
        runs = instance.get_runs(dg.RunsFilter(statuses=IN_FLIGHT), limit=5)
        backfills = [
            b for b in instance.get_backfills(limit=50) if b.status.value in BACKFILLS_IN_FLIGHT
        ][:5]
    finally:
        instance.dispose()
    if not runs and not backfills:
        return None
    listed = ", ".join(
        [f"{r.run_id} ({r.job_name}, {r.status.value.lower()})" for r in runs]
        + [f"backfill {b.backfill_id} ({b.status.value.lower()})" for b in backfills]
    )
    if command == "materialize":
        instead = (
            "wait until they end, or launch the work in the UI, where the queue orders it "
            "(Materialize for assets, a backfill of daily_refresh for days)"
        )
    else:
        instead = (
            "wait until they end (switch the schedule and sensor off in the UI meanwhile, so "
            f"that no new run starts), then run `crm-pipeline {command}` again"
        )
    return (
        f"Runs of the Dagster instance in {home} have not ended: {listed}. This command writes "
        "the warehouse outside their queue, so one would fail on the other's lock, or publish "
        f"half a run: {instead}. A run whose process died (a killed `crm-pipeline materialize "
        "--record`) stays started until it is terminated in the UI (Runs), or deleted: "
        f"DAGSTER_HOME={home} .venv/bin/dagster run delete RUN_ID."
        + (
            " A backfill stays requested while no daemon runs it, until it is cancelled in the "
            "UI (Overview, Backfills)."
            if backfills
            else ""
        )
    )


def range_tags(first: str, last: str) -> dict[str, str]:
    """Run tags that make one run cover a range of partitions (a single-run backfill)."""
    return {RANGE_START: first, RANGE_END: last}


def selected_keys(defs: dg.Definitions, selection: str | None) -> list[dg.AssetKey]:
    """The asset keys an asset selection string (e.g. 'group:raw') names; every asset for
    None."""
    graph = defs.resolve_asset_graph()
    if not selection:
        return list(graph.get_all_asset_keys())
    with warnings.catch_warnings():  # Dagster's own parser uses a beta parameter
        warnings.simplefilter("ignore", dg.BetaWarning)
        return list(dg.AssetSelection.from_string(selection).resolve(graph))


def any_partitioned(defs: dg.Definitions, keys: list[dg.AssetKey]) -> bool:
    """Whether any of the assets is partitioned (a run of them needs a range of days)."""
    graph = defs.resolve_asset_graph()
    return any(graph.get(key).partitions_def is not None for key in keys)


# The resources a run's --set may configure: the analysis's own settings.
SETTABLE = ("analysis", "mining", "core_rules")


def _settings_class(resource: str) -> type[dg.ConfigurableResource]:
    from crm_pipeline.analytics.settings import AnalysisSettings
    from crm_pipeline.core.classify import CoreRules
    from crm_pipeline.mining.settings import MiningSettings

    return {"analysis": AnalysisSettings, "mining": MiningSettings, "core_rules": CoreRules}[
        resource
    ]


def setting_config(settings: list[str]) -> dict:
    """Run config for resource settings given as RESOURCE.FIELD=VALUE ('analysis.as_of=
    2025-06-30'); a value that reads as JSON (3, 0.1, true) is that value, else text, and a
    text setting's value is text (20250630 stays a text to read as a day)."""
    resources: dict[str, dict] = {}
    for setting in settings:
        name, sep, text = setting.partition("=")
        resource, dot, field = name.strip().partition(".")
        if not (sep and dot and resource and field):
            raise SettingError(
                f"--set {setting!r} is not RESOURCE.FIELD=VALUE, such as analysis.as_of=2025-06-30"
            )
        if resource not in SETTABLE:
            raise SettingError(
                f"--set {setting!r}: {resource!r} is not one of {', '.join(SETTABLE)} (the "
                "warehouse and landing zone are set by CRM_* variables)"
            )
        fields = _settings_class(resource).model_fields
        if field not in fields:
            raise SettingError(
                f"--set {setting!r}: {resource} has no setting {field!r}; it has "
                f"{', '.join(fields)}"
            )
        value: object = text
        if fields[field].annotation not in (str, "str"):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                try:
                    value = float(text)  # .5, which JSON does not read as a number
                except ValueError:
                    value = text
        resources.setdefault(resource, {"config": {}})["config"][field] = value
    for resource, config in resources.items():
        _refuse_bad_values(resource, config["config"])
    return {"resources": resources} if resources else {}


def _refuse_bad_values(resource: str, config: dict) -> None:
    """A value the resource would refuse (a day written 30/06/2025, a count out of range),
    refused now: not once a run is under way. (Dagster's stricter type check follows:
    config_problem.)"""
    from pydantic import ValidationError

    try:
        _settings_class(resource)(**config)
    except ValidationError as error:
        problems = "; ".join(
            e["msg"].removeprefix("Value error, ")
            if e["type"] == "value_error"  # the project's own message names the setting
            else f"{resource}.{e['loc'][0]} = {config.get(e['loc'][0])!r}: {e['msg']}"
            for e in error.errors()
        )
        raise SettingError(
            f"--set {problems}. The README's Configuration section lists the settings."
        ) from None


def config_problem(defs: dg.Definitions, config: dict) -> str | None:
    """What Dagster's own check of the settings' run config refuses (5.0 for a whole number),
    said as the command says it; None when it passes."""
    try:
        dg.validate_run_config(defs.resolve_implicit_global_asset_job_def(), config)
    except dg.DagsterInvalidConfigError as error:
        return settings_refused(error)
    return None


def settings_refused(error: dg.DagsterInvalidConfigError) -> str:
    problems = "; ".join(e.message.rstrip(".") for e in error.errors) or str(error)
    return (
        f"--set: {problems}. The README's Configuration section lists the settings; the UI "
        "shows them with their types (Deployment > Resources)."
    )


def materialize_all(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    first: str | None,
    last: str | None,
    selection: str | list[dg.AssetKey] | None = None,
    settings: list[str] | None = None,
    tags: dict[str, str] | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize every asset (or a selection, e.g. 'group:raw', or the assets listed) in one
    in-process run,
    event sources over the days [first, last] (None: no partitioned asset is selected), with
    resource settings as RESOURCE.FIELD=VALUE (setting_config)."""
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        run_config={
            "loggers": {"console": {"config": {"log_level": "INFO"}}},
            **setting_config(settings or []),
        },
        instance=instance,
        tags=(range_tags(first, last) if first and last else {}) | (tags or {}),
        raise_on_error=False,
        asset_selection=selected_keys(defs, selection) if isinstance(selection, str) else selection,
    )


def step_seconds(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """Each step's wall time in a run (a step is an asset and its checks), from its events."""
    started: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            started[event.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            seconds[event.step_key] = entry.timestamp - started[event.step_key]
    return seconds


def layer_seconds(steps: dict[str, float]) -> dict[str, float]:
    """Each layer's time in a run: the summed wall time of its assets' steps (a step key
    starts with its asset's layer, 'staging__feedback'), start-up and run set-up left out."""
    seconds: dict[str, float] = {}
    for step, took in steps.items():
        layer = step.split("__")[0]
        seconds[layer] = seconds.get(layer, 0.0) + took
    return {layer: round(took, 2) for layer, took in seconds.items()}


# The steps that recompute customer-level tables for every customer, as a daily run must;
# the others load and model the event data (a daily run loads and stages the new partition;
# some of core's event tables are rebuilt over every day).
CUSTOMER_LEVEL = ("core__customers", "analytics__", "mining__")


def work_seconds(steps: dict[str, float]) -> dict[str, float]:
    """A run's step time split into the event data it loaded and modelled, the customer-level
    tables it recomputed, and the publishing of the warehouse."""
    split = {"event_data": 0.0, "customer_level": 0.0, "publish": 0.0}
    for step, took in steps.items():
        if step.startswith("warehouse__"):
            split["publish"] += took
        elif step.startswith(CUSTOMER_LEVEL):
            split["customer_level"] += took
        else:
            split["event_data"] += took
    return {part: round(took, 2) for part, took in split.items()}


def slowest_steps(steps: dict[str, float], shown: int = 12) -> dict[str, float]:
    """The steps that took longest, slowest first, as 'layer.table'."""
    ranked = sorted(steps.items(), key=lambda item: -item[1])[:shown]
    return {step.replace("__", ".", 1): round(took, 2) for step, took in ranked}


# The lines of a failed blocking check's finding shown after its summary line.
SHOWN_LINES = 5


def check_finding(evaluation: dg.AssetCheckEvaluation) -> list[str]:
    """A failed check as operators read it: 'asset check: summary', then, for a blocking one,
    up to SHOWN_LINES more lines of what it found (the rows, the partitions)."""
    lines = [line for line in (evaluation.description or "").splitlines() if line.strip()] or [""]
    head = f"{evaluation.asset_key.to_user_string()} {evaluation.check_name}: {lines[0]}"
    blocking = evaluation.severity == dg.AssetCheckSeverity.ERROR
    return [head, *(lines[1 : 1 + SHOWN_LINES] if blocking else [])]


def failure_messages(result: dg.ExecuteInProcessResult) -> list[str]:
    """Why each failed step failed: the project's explanation (asset, source, partitions,
    cause, what to do) when it gave one, else the error Dagster caught."""
    messages = []
    for event in result.all_events:
        if event.is_step_failure:
            messages.append(f"{event.step_key}: {step_failure(event)}")
    if not messages and not result.success:
        # No step failed: the run did, before any step (a resource setting out of range).
        for event in result.all_events:
            if event.event_type_value in ("RESOURCE_INIT_FAILURE", "RUN_FAILURE"):
                messages.append(f"run: {event.message}{failure_cause(event)}")
    return messages


def step_failure(event: dg.DagsterEvent) -> str:
    """A failed step's message: what the step said of its failure (failures.explained), or
    else the error."""
    data = event.step_failure_data
    explained = data.user_failure_data.description if data.user_failure_data else None
    return explained or (data.error.message.strip() if data.error else "no error recorded")


def causes_once(messages: list[str]) -> list[str]:
    """The messages, with a cause an earlier one gave said as 'as above': steps failed by one
    cause (the warehouse held by another process) say it once."""
    shown: set[str] = set()
    said = []
    for message in messages:
        before, cause_said, cause = message.partition(" Cause: ")
        said.append(f"{before} Cause: as above." if cause_said and cause in shown else message)
        if cause_said:
            shown.add(cause)
    return said


def failure_cause(event: dg.DagsterEvent) -> str:
    """Why a resource could not be set up (a setting's value it refused), in a line."""
    error = getattr(event.event_specific_data, "error", None)
    while error is not None and error.cause is not None:
        error = error.cause
    if error is None:
        return ""
    said = " ".join(error.message.split("For further information")[0].split())
    return f" Cause: {said}"


def warehouse_summary(path: str) -> list[tuple[str, int]]:
    """Every table in the warehouse with its row count, schema by schema."""
    with duckdb.connect(path, read_only=True) as conn:
        tables = conn.execute(
            """
            SELECT table_schema || '.' || table_name
            FROM information_schema.tables
            WHERE table_type = 'BASE TABLE'
            ORDER BY table_schema, table_name
            """
        ).fetchall()
        return [
            (name, conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]) for (name,) in tables
        ]
