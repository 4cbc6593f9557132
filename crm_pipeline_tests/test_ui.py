"""The Dagster UI for real: the webserver loads every asset and check, runs what it launches, and
a run whose process is killed does not hold up the next."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

from crm_pipeline.definitions import defs
from crm_pipeline.raw.schemas import RAW_MODELS
from crm_pipeline.resources import WAITING_TAG
from crm_pipeline.run import prepare_instance
from crm_pipeline.writer_lock import sole_writer
from crm_pipeline_tests.alert_endpoint import Endpoint, alert
from crm_pipeline_tests.conftest import free_port
from crm_pipeline_tests.landing_builder import DAY1, DAY2

REPO = Path(__file__).resolve().parents[1]
LOCATION = "crm_pipeline.definitions"


def _graphql(url: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"{url}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = json.load(response)
    except urllib.error.HTTPError as error:  # the server's own words, not only its status
        raise AssertionError(f"{error}: {error.read().decode(errors='replace')[:2000]}") from None
    assert "errors" not in payload, payload["errors"]
    return payload["data"]


# Runs the command given after it with SIGINT and SIGTERM at their defaults (exec keeps a
# signal ignored, and resets one handled).
_DEFAULT_SIGNALS = (
    "import os, signal, sys; "
    "signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "signal.signal(signal.SIGTERM, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def _processes_in_group(group: int) -> list[str]:
    """The command lines of the live processes in a process group."""
    left = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The fields after the command's name: state, parent, process group.
            state, _, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
            if int(pgrp) == group and state != "Z":
                left.append(stat.with_name("cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, ValueError):
            continue  # ended meanwhile
    return left


@pytest.fixture(scope="module")
def ui_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DAGSTER_HOME of the UI's instance, as `make ui` makes it, but for run monitoring's clock:
    the daemon looks every second and frees a dead run's slots 2 s after it ended (120 s and
    60 s in crm_pipeline/dagster.yaml). The warehouse is beside it."""
    home = tmp_path_factory.mktemp("dagster_home")
    prepare_instance(home)
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    config["run_monitoring"] |= {"poll_interval_seconds": 1, "free_slots_after_run_end_seconds": 2}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


@pytest.fixture(scope="module")
def webserver(tiny_zone: Path, ui_home: Path) -> Iterator[str]:
    home = ui_home
    # A copy delivered ten minutes ago: the sensor launches days whose files have settled.
    zone = home / "landing"
    shutil.copytree(tiny_zone, zone)
    delivered = time.time_ns() - 600 * 10**9
    for path in zone.rglob("*"):
        os.utime(path, ns=(delivered, delivered))
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "CRM_LANDING_DIR": str(zone),
        "CRM_WAREHOUSE": str(home / "warehouse.duckdb"),
    }
    server = subprocess.Popen(
        # `dagster dev` as `make ui` runs it: the webserver plus the daemon that dequeues runs,
        # started with SIGINT and SIGTERM as a terminal gives them. A process started in the
        # background ignores SIGINT, and a Dagster run in this one set SIGTERM as SIGINT: a
        # server inheriting that ignores both, and stopping it took the kill below.
        [
            sys.executable,
            "-c",
            _DEFAULT_SIGNALS,
            Path(sys.executable).with_name("dagster"),
            "dev",
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{url}/server_info", timeout=2)
                break
            except OSError:
                assert server.poll() is None, "the webserver exited while starting"
                time.sleep(0.5)
        else:
            pytest.fail("the webserver did not answer within 90 s")
        yield url
    finally:
        # Stopped as Ctrl-C stops `make ui`: every process it started ends with it.
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
            pytest.fail("the webserver did not stop within 60 s of SIGINT")
        left = _processes_in_group(server.pid)
        if left:
            os.killpg(server.pid, signal.SIGKILL)
        assert not left, f"processes left running after the webserver stopped: {left}"


def test_ui_loads_every_asset_with_its_checks(webserver: str) -> None:
    data = _graphql(
        webserver,
        "{ assetNodes { assetKey { path } groupName assetChecksOrError { "
        "... on AssetChecks { checks { name } } } } }",
    )
    nodes = {tuple(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    assert {("raw", t) for t in RAW_MODELS} <= set(nodes)
    graph = defs.resolve_asset_graph()
    expected: dict[tuple[str, ...], set[str]] = {}
    for check in graph.asset_check_keys:
        expected.setdefault(tuple(check.asset_key.path), set()).add(check.name)
    assert set(nodes) == set(expected)
    for key, node in nodes.items():
        assert node["groupName"] == key[0]
        checks = {c["name"] for c in node["assetChecksOrError"]["checks"]}
        assert checks == expected[key], key


def test_ui_opens_without_the_welcome_dialog(webserver: str) -> None:
    assert _graphql(webserver, "{ shouldShowNux }")["shouldShowNux"] is False


def test_ui_loads_the_schedule_and_the_sensor(webserver: str) -> None:
    data = _graphql(
        webserver,
        "{ workspaceOrError { ... on Workspace { locationEntries { locationOrLoadError { "
        "... on RepositoryLocation { repositories { name schedules { name scheduleState { status } } "
        "sensors { name sensorState { status } } } } } } } } }",
    )
    (entry,) = data["workspaceOrError"]["locationEntries"]
    (repository,) = entry["locationOrLoadError"]["repositories"]
    assert {s["name"]: s["scheduleState"]["status"] for s in repository["schedules"]} == {
        "daily_refresh_schedule": "STOPPED"
    }
    assert {s["name"]: s["sensorState"]["status"] for s in repository["sensors"]} == {
        "new_landing_day": "STOPPED",
        "failed_run_alert": "STOPPED",
    }


def test_ui_dry_runs_the_sensor_to_one_run_for_the_delivered_days(webserver: str) -> None:
    tick = _graphql(
        webserver,
        """
        mutation DryRun($selector: SensorSelector!) {
          sensorDryRun(selectorData: $selector, cursor: null) {
            __typename
            ... on DryRunInstigationTick {
              evaluationResult { runRequests { tags { key value } } skipReason error { message } }
            }
            ... on PythonError { message }
          }
        }
        """,
        {
            "selector": {
                "repositoryLocationName": LOCATION,
                "repositoryName": "__repository__",
                "sensorName": "new_landing_day",
            }
        },
    )["sensorDryRun"]
    assert tick["__typename"] == "DryRunInstigationTick", tick
    evaluation = tick["evaluationResult"]
    assert evaluation["error"] is None, evaluation["error"]
    # Both delivered days, consecutive, in one run of the range (nothing published yet).
    [request] = evaluation["runRequests"]
    tags = {t["key"]: t["value"] for t in request["tags"]}
    assert tags["dagster/asset_partition_range_start"] == DAY1
    assert tags["dagster/asset_partition_range_end"] == DAY2


def _launch(url: str, selector: dict, tags: dict[str, str] | None = None) -> str:
    """Launch a run of the job `selector` names from the UI; its id."""
    launched = _graphql(
        url,
        """
        mutation Launch($params: ExecutionParams!) {
          launchRun(executionParams: $params) {
            __typename
            ... on LaunchRunSuccess { run { runId } }
            ... on PythonError { message }
          }
        }
        """,
        {
            "params": {
                "selector": {
                    "repositoryLocationName": LOCATION,
                    "repositoryName": "__repository__",
                    **selector,
                },
                "executionMetadata": {
                    "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]
                },
            }
        },
    )["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


def _run(url: str, run_id: str) -> tuple[str, dict[str, str]]:
    """A run's status and tags."""
    run = _graphql(
        url,
        "query($id: ID!) { runOrError(runId: $id) { ... on Run { status tags { key value } } } }",
        {"id": run_id},
    )["runOrError"]
    return run["status"], {t["key"]: t["value"] for t in run["tags"]}


def _ended(url: str, run_id: str, seconds: float) -> str:
    """The run's status once it has ended, or its status after `seconds`."""
    deadline, status = time.monotonic() + seconds, None
    while time.monotonic() < deadline:
        status = _run(url, run_id)[0]
        if status in {"SUCCESS", "FAILURE", "CANCELED"}:
            break
        time.sleep(1)
    return status


def _messages(url: str, run_id: str) -> list[str]:
    return [
        event.get("message", "")
        for event in _graphql(
            url,
            "query($id: ID!) { logsForRun(runId: $id) { ... on EventConnection { events { "
            "... on MessageEvent { message } } } } }",
            {"id": run_id},
        )["logsForRun"]["events"]
    ]


def test_ui_launches_a_run_that_succeeds(webserver: str) -> None:
    run_id = _launch(
        webserver,
        {
            "jobName": "__ASSET_JOB",
            "assetSelection": [{"path": ["raw", "products"]}, {"path": ["raw", "stores"]}],
        },
    )
    status = _ended(webserver, run_id, 120)
    assert status == "SUCCESS"
    # Its steps ran in the run's own process, one after another, not a process per step.
    messages = _messages(webserver, run_id)
    assert any(m.startswith("Executing steps in process") for m in messages), messages
    assert not any("Launching subprocess" in m for m in messages)


def test_ui_sensor_switched_on_launches_the_delivered_days_as_one_run_that_succeeds(
    webserver: str,
) -> None:
    selector = {
        "repositoryLocationName": LOCATION,
        "repositoryName": "__repository__",
        "sensorName": "new_landing_day",
    }
    started = _graphql(
        webserver,
        """
        mutation Start($selector: SensorSelector!) {
          startSensor(sensorSelector: $selector) {
            __typename
            ... on Sensor { sensorState { id status } }
            ... on PythonError { message }
          }
        }
        """,
        {"selector": selector},
    )["startSensor"]
    assert started["__typename"] == "Sensor", started
    state = started["sensorState"]
    try:
        # The daemon of `dagster dev` ticks the sensor, which queues one run for both days.
        deadline, runs = time.monotonic() + 240, []
        while time.monotonic() < deadline:
            runs = _graphql(
                webserver,
                """
                {
                  runsOrError(filter: {tags: [{key: "dagster/sensor_name", value: "new_landing_day"}]}) {
                    ... on Runs { results { runId status tags { key value } } }
                  }
                }
                """,
            )["runsOrError"]["results"]
            if runs and runs[0]["status"] in {"SUCCESS", "FAILURE", "CANCELED"}:
                break
            time.sleep(2)
    finally:
        _graphql(
            webserver,
            "mutation Stop($id: String) { stopSensor(id: $id) { __typename } }",
            {"id": state["id"]},
        )
    [run] = runs
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert (
        tags["dagster/asset_partition_range_start"],
        tags["dagster/asset_partition_range_end"],
    ) == (
        DAY1,
        DAY2,
    )
    assert run["status"] == "SUCCESS", run


def _alert_text(home: Path, run_id: str) -> str:
    """What the failed-run alert posts for a failed run of the instance in `home`."""
    instance = dg.DagsterInstance.from_config(str(home))
    hook = Endpoint([])
    try:
        [failed] = instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.RUN_FAILURE
        ).records
        context = dg.build_run_status_sensor_context(
            sensor_name="failed_run_alert",
            dagster_event=failed.event_log_entry.dagster_event,
            dagster_instance=instance,
            dagster_run=instance.get_run_by_id(run_id),
        ).for_run_failure()
        assert alert(context, hook.url) is None
    finally:
        hook.close()
        instance.dispose()
    [(_, _, body)] = hook.posts
    return json.loads(body)["text"]


def test_ui_a_run_whose_process_is_killed_fails_and_the_next_run_gets_the_warehouse(
    webserver: str, ui_home: Path
) -> None:
    daily = {"jobName": "daily_refresh"}
    day = {"dagster/partition": DAY1}
    # The first run's first step takes the warehouse pool's one slot, then waits for a
    # command writing the warehouse: its process is killed there (as the system kills a
    # process for memory), the slot still claimed.
    with sole_writer(str(ui_home / "warehouse.duckdb"), "materialize"):
        killed = _launch(webserver, daily, day)
        deadline = time.monotonic() + 120
        while WAITING_TAG not in _run(webserver, killed)[1] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert WAITING_TAG in _run(webserver, killed)[1], _run(webserver, killed)
        (pid,) = {
            int(m.split("(pid: ")[1].rstrip(")."))
            for m in _messages(webserver, killed)
            if m.startswith("Started process for run")
        }
        os.kill(pid, signal.SIGKILL)
        assert _ended(webserver, killed, 60) == "FAILURE"
    # The failed-run alert says why, where the run's own failure message does not.
    assert "terminated by signal 9 (SIGKILL)" in _alert_text(ui_home, killed)
    # The next run of the day is not held up by the dead run's slot: run monitoring frees it.
    after = _launch(webserver, daily, day)
    assert _ended(webserver, after, 180) == "SUCCESS", _run(webserver, after)


def test_a_deployment_monitors_runs_as_the_local_instance_the_ui_runs_with() -> None:
    local, production = (
        yaml.safe_load((REPO / "crm_pipeline" / name).read_text())["run_monitoring"]
        for name in ("dagster.yaml", "dagster_production.yaml")
    )
    assert production == local
    assert local["enabled"] is True and local["free_slots_after_run_end_seconds"] > 0
