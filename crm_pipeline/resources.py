"""Resources: the DuckDB warehouse and the landing zone, each configured in one place."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import phonenumbers
from pydantic import Field

from crm_pipeline import as_private_as
from crm_pipeline.analytics.settings import AnalysisSettings
from crm_pipeline.core.classify import CoreRules
from crm_pipeline.failures import DAMAGED_ADVICE, ActionableError, damaged_file
from crm_pipeline.landing import shop_url_for
from crm_pipeline.mining.settings import MiningSettings
from crm_pipeline.raw.tables import quote_literal
from crm_pipeline.staging.phones import DEFAULT_PHONE_REGIONS
from crm_pipeline.webhook import AlertWebhook
from crm_pipeline.writer_lock import held_since, holder, holders

DEFAULT_WAREHOUSE = "data/warehouse.duckdb"
DEFAULT_LANDING_DIR = "data/landing"
# Every asset that writes the warehouse runs in this pool. Its limit (1) is set on the
# instance (dagster.yaml), so Dagster serialises writers instead of DuckDB's file lock.
WAREHOUSE_POOL = "warehouse"
# DuckDB 1.5 and later open files in this format; DuckDB 2's own format would shut out every
# 1.x client (the DuckDB CLI on PyPI is 1.5), and a publish that rewrote the copy in an older
# format would take 29 s at a million customers, against about 2 s for the file copy. At 1M,
# staging in this format took 49.4 and 46.1 s, in DuckDB 2's 47.1 and 51.3 s and in 1.4's
# 55.5 and 48.5 s (alternated; the machine's noise is as large as the differences).
STORAGE_VERSION = "v1.5.0"
# What the published copy holds (CRM_PUBLISHED_CONTENT).
PSEUDONYMOUS, WHOLE = "pseudonymous", "whole"


# How often a step waiting for a command (WarehouseResource.wait_for_command) looks again.
_COMMAND_POLL_SECONDS = 2.0

# Bytes 8 to 11 of a DuckDB database file.
DUCKDB_HEADER = b"DUCK"


class WarehouseUnavailable(ActionableError):
    """The warehouse file cannot be opened: another process holds it, or its path is wrong."""


# The tag of a run `crm-pipeline materialize --record` records: the command's process id.
COMMAND_PID_TAG = "crm/command_pid"
# The run tag that shows in the UI's run list while a run waits for a command, and after.
WAITING_TAG = "crm/waiting_for_command"


def _step_context() -> dg.AssetExecutionContext | None:
    """The context of the step under way, if any (a command's own reads have none)."""
    try:
        return dg.AssetExecutionContext.get()
    except dg.DagsterInvariantViolationError:
        return None


def _recorded_beside(warehouse: str) -> bool:
    """Whether a command holding the warehouse is recording its run in this step's Dagster
    instance (`materialize --record`, its run tagged with its process id): its steps claim the
    warehouse pool slot this step holds, so waiting for it would hold both up."""
    context = _step_context()
    return context is not None and any(
        context.instance.get_runs(
            dg.RunsFilter(
                statuses=[dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED],
                tags={COMMAND_PID_TAG: str(pid)},
            ),
            limit=1,
        )
        for pid in holders(warehouse)
    )


def _tag_run(value: str) -> None:
    """Tag the run of the step under way (if any) with what it waits for, or waited."""
    context = _step_context()
    if context is not None:
        context.instance.add_run_tags(context.run.run_id, {WAITING_TAG: value})


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file. One writing process at a time: writers run in the pool."""

    path: str = DEFAULT_WAREHOUSE
    published: str = Field(
        default="",
        description="The copy analysts read, swapped in after a good run; empty: "
        "published.duckdb beside the warehouse.",
    )
    published_content: str = Field(
        default=PSEUDONYMOUS,
        description="What the published copy holds: 'pseudonymous' (core, analytics, mining, "
        "quarantine and the logs, every personal column empty; the delivered records of raw "
        "and staging left out) or 'whole' (the warehouse as it is, personal data included, "
        "for analysts cleared to read it).",
    )
    memory_limit: str = Field(
        default="1GB",
        description="DuckDB's memory for a step; past it, DuckDB spills to disk.",
    )
    large_memory_limit: str = Field(
        default="3GB",
        description="DuckDB's memory for the steps that group or sort every order line or "
        "identity record (the mining tables; core's crosswalk, order lines and customers): at "
        "the default they spill to disk. At 1,000,000 customers the mining layer peaks near "
        "3 GB RSS with it.",
    )
    threads: int = 2
    storage_version: str = Field(
        default=STORAGE_VERSION,
        description="The DuckDB storage format a new warehouse file is written in (and so its "
        "published copy): the oldest DuckDB release that can open it, such as the DuckDB CLI "
        "or a BI tool's driver. A file in another format is rewritten in this one by its next "
        "publish.",
    )

    time_zone: str = Field(
        default="UTC",
        description="The business's time zone (an IANA name such as Europe/Berlin): "
        "timestamps are kept as wall time there; a delivered timestamp with a UTC offset "
        "(Z, +02:00) is converted to it, one without is taken as it is.",
    )
    phone_regions: str = Field(
        default=",".join(DEFAULT_PHONE_REGIONS),
        description="The countries whose phone numbers the sources hold written nationally, "
        "without a country code (ISO 3166 codes, comma-separated, such as GB or GB,IE): such a "
        "number is read as the first of them that holds it. One written with '+' or '00' and "
        "its country code reads the same whatever this says.",
    )
    key_secret_file: str = Field(
        default="",
        description="The file holding the secret customer keys are made with (made, readable "
        "by its owner only, by the first run): keep it out of the published copy's reach and "
        "back it up with the warehouse. Empty: customer_key.secret beside the warehouse.",
    )
    command_wait_minutes: float = Field(
        default=180,
        description="How long a crm-pipeline command writing the warehouse outside the run "
        "queue (materialize, erase, rekey) may hold it, from its start, while a run's steps wait "
        "for it to end: a run launched from the UI, the schedule or the sensor meanwhile goes "
        "on after it; past this, the command is taken as stuck and the run fails, having "
        "written nothing.",
    )

    def phone_region_codes(self) -> tuple[str, ...]:
        """The phone regions, checked: each one a region phonenumbers knows."""
        regions = tuple(r.strip().upper() for r in self.phone_regions.split(",") if r.strip())
        unknown = [r for r in regions if r not in phonenumbers.SUPPORTED_REGIONS]
        if unknown or not regions:
            raise ActionableError(
                f"CRM_PHONE_REGIONS {self.phone_regions!r} "
                + (f"names no country phonenumbers knows: {unknown}" if unknown else "is empty")
                + ". Give ISO 3166 country codes, comma-separated, such as GB or US,CA."
            )
        return regions

    def publishes_whole(self) -> bool:
        """Whether the published copy is the whole warehouse (the setting, checked)."""
        content = self.published_content.strip().lower()
        if content not in (PSEUDONYMOUS, WHOLE):
            raise ActionableError(
                f"CRM_PUBLISHED_CONTENT {self.published_content!r} is neither "
                f"'{PSEUDONYMOUS}' (the default: no personal data in the copy analysts read) "
                f"nor '{WHOLE}' (the warehouse as it is, personal data included)."
            )
        return content == WHOLE

    def key_secret_path(self) -> Path:
        return (
            Path(self.key_secret_file)
            if self.key_secret_file
            else Path(self.path).with_name("customer_key.secret")
        )

    def published_path(self) -> Path:
        return (
            Path(self.published)
            if self.published
            else Path(self.path).with_name("published.duckdb")
        )

    def published_problem(self) -> str | None:
        """Why a publish must not replace what is at the published copy's path (the warehouse
        itself, a file that is no DuckDB database: a key secret, a shop database, a folder),
        with what to do; None when it may."""
        target = self.published_path()
        setting = "CRM_PUBLISHED" if self.published else "CRM_WAREHOUSE"
        if target.resolve() == Path(self.path).resolve():
            return (
                f"{setting} makes the published copy's path {target} the warehouse itself: a "
                "publish would replace the warehouse with its copy. Set CRM_PUBLISHED to another "
                "path, such as published.duckdb beside a warehouse of another name."
            )
        if not target.exists() and not target.is_symlink():
            return None
        try:
            with target.open("rb") as file:
                head = file.read(len(DUCKDB_HEADER) + 8)
        except OSError as error:
            head = f"({error.strerror})".encode()
        # An empty file is one an operator made to give the copy its permissions.
        if head and head[8:] != DUCKDB_HEADER:
            return (
                f"{setting} makes {target} the published copy's path, and that is no DuckDB "
                "file (a copy published before is): a publish would replace it. Name another "
                "path for the copy in CRM_PUBLISHED, or move that file away."
            )
        return None

    def publish_target(self) -> Path:
        """The published copy's path, once published_problem has nothing against it."""
        problem = self.published_problem()
        if problem:
            raise ActionableError(problem)
        return self.published_path()

    def wait_for_command(self) -> None:
        """Wait for a crm-pipeline command of another process writing the warehouse to end: a
        run's step (launched from the UI) between a command's steps would mix the two, or read
        half of the command's work. The command refuses to start while a run of the instance
        has not ended (run.runs_not_ended), so a waiting run is next. A command that has held
        the warehouse for command_wait_minutes is taken as stuck: every step of the run fails
        then, having written nothing (the limit runs from the command's start, so the steps
        of a run share it)."""
        command = holder(self.path)
        if not command:
            return
        if _recorded_beside(self.path):
            raise WarehouseUnavailable(
                f"The warehouse {self.path} is being written by a crm-pipeline command recorded "
                f"in this run's Dagster instance ({command}; `materialize --record`): its steps "
                "and this run's take turns in the warehouse pool, so this step cannot wait for "
                "it, and wrote nothing. Launch the run again once the command has ended."
            )
        log = dg.get_dagster_logger()
        started = time.monotonic()
        since = held_since(self.path) or datetime.now(UTC)
        until = since + timedelta(minutes=self.command_wait_minutes)
        if datetime.now(UTC) < until:
            _tag_run(command[:200])
            log.info(
                f"The warehouse {self.path} is being written by a crm-pipeline command outside "
                f"the run queue ({command}); this step waits for it to end, until "
                f"{until:%Y-%m-%d %H:%M:%S} UTC at the latest (command_wait_minutes: "
                f"{self.command_wait_minutes:g} from the command's start)."
            )
        while command and datetime.now(UTC) < until:
            left = (until - datetime.now(UTC)).total_seconds()
            time.sleep(max(0.0, min(_COMMAND_POLL_SECONDS, left)))
            command = holder(self.path)
        if command:
            raise WarehouseUnavailable(
                f"The warehouse {self.path} is still being written by a crm-pipeline command "
                f"outside the run queue ({command}), more than {self.command_wait_minutes:g} "
                "minutes after it started (command_wait_minutes); this step wrote nothing. "
                "If the command is stuck, stop it; launch the run again once it has ended."
            )
        waited = time.monotonic() - started
        if waited > _COMMAND_POLL_SECONDS / 2:
            _tag_run(f"ended after {waited:.0f} s")
            log.info(f"The command ended after {waited:.0f} s of waiting; the step goes on.")

    @contextmanager
    def connect(
        self, read_only: bool = False, memory_limit: str | None = None
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the warehouse (with DuckDB's memory_limit unless told another). No lock
        retries: a second writer is a scheduling bug to surface. A crm-pipeline command of
        another process writing it is waited for, to read as well as to write (DuckDB shuts
        readers out while a writer has it open)."""
        if not read_only:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.wait_for_command()
        config = {
            "memory_limit": memory_limit or self.memory_limit,
            "threads": self.threads,
            "storage_compatibility_version": self.storage_version,
        }
        # What it writes beside the warehouse (its WAL, a copy) no more readable than it.
        with as_private_as(self.path) if not read_only else nullcontext():
            try:
                conn = duckdb.connect(self.path, read_only=read_only, config=config)
            except duckdb.IOException as error:
                if damaged_file(error):
                    raise WarehouseUnavailable(
                        f"Cannot open the warehouse {self.path}: {error}. {DAMAGED_ADVICE}"
                    ) from error
                raise WarehouseUnavailable(
                    f"Cannot open the warehouse {self.path}"
                    f"{' read-only' if read_only else ' for writing'}: {error}. If another process "
                    "holds it (a run, or a session left open on it: analysts read the published "
                    "copy instead), wait for it to end or close it; if CRM_WAREHOUSE names a "
                    "folder or a place this user cannot write, point it at a .duckdb file."
                ) from error
            try:
                try:
                    conn.execute(f"SET TimeZone = {quote_literal(self.time_zone)}")
                except duckdb.Error as error:
                    raise ActionableError(
                        f"CRM_TIME_ZONE {self.time_zone!r} is not a time zone ({error}). Give an "
                        "IANA name such as UTC, Europe/Berlin or America/New_York."
                    ) from error
                yield conn
            finally:
                conn.close()


class LandingZoneResource(dg.ConfigurableResource):
    """Where sources are delivered: daily file folders, reference CSVs and the shop database."""

    root: str = DEFAULT_LANDING_DIR
    shop_url: str = ""

    @property
    def path(self) -> Path:
        return Path(self.root)

    @property
    def database_url(self) -> str:
        """The online shop's SQLAlchemy URL; by default the SQLite file in the landing zone."""
        return self.shop_url or shop_url_for(self.root)


SETTINGS = {
    "CRM_WAREHOUSE": DEFAULT_WAREHOUSE,
    "CRM_PUBLISHED": "",
    "CRM_PUBLISHED_CONTENT": PSEUDONYMOUS,
    "CRM_KEY_SECRET_FILE": "",
    "CRM_TIME_ZONE": "UTC",
    "CRM_PHONE_REGIONS": ",".join(DEFAULT_PHONE_REGIONS),
    "CRM_LANDING_DIR": DEFAULT_LANDING_DIR,
    "CRM_SHOP_URL": "",
    "CRM_ALERT_WEBHOOK": "",
    "CRM_UI_URL": "",
}


def resources_from_env(resolve: bool = False) -> dict[str, dg.ConfigurableResource]:
    """The resources every asset uses, bound once: CRM_WAREHOUSE, CRM_PUBLISHED,
    CRM_PUBLISHED_CONTENT, CRM_KEY_SECRET_FILE, CRM_TIME_ZONE, CRM_PHONE_REGIONS,
    CRM_LANDING_DIR, CRM_SHOP_URL, CRM_ALERT_WEBHOOK, CRM_UI_URL.

    A setting given in the environment is bound as an EnvVar, so the UI shows where it comes
    from; resolve=True reads the values now instead (for the command line).
    """

    def setting(name: str) -> str | dg.EnvVar:
        if not os.environ.get(name):
            return SETTINGS[name]
        return os.environ[name] if resolve else dg.EnvVar(name)

    return {
        "warehouse": WarehouseResource(
            path=setting("CRM_WAREHOUSE"),
            published=setting("CRM_PUBLISHED"),
            published_content=setting("CRM_PUBLISHED_CONTENT"),
            key_secret_file=setting("CRM_KEY_SECRET_FILE"),
            time_zone=setting("CRM_TIME_ZONE"),
            phone_regions=setting("CRM_PHONE_REGIONS"),
        ),
        "core_rules": CoreRules(),
        "analysis": AnalysisSettings(),
        "mining": MiningSettings(),
        "landing_zone": LandingZoneResource(
            root=setting("CRM_LANDING_DIR"), shop_url=setting("CRM_SHOP_URL")
        ),
        "alert_webhook": AlertWebhook(
            url=setting("CRM_ALERT_WEBHOOK"), ui_url=setting("CRM_UI_URL")
        ),
    }
