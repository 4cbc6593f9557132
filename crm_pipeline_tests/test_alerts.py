"""The failed-run alert: what a failed run posts to the webhook, and a webhook that is down."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from crm_pipeline import landing, webhook
from crm_pipeline.analytics.settings import AnalysisSettings
from crm_pipeline.definitions import definitions, defs
from crm_pipeline.run import range_tags
from crm_pipeline.webhook import AlertWebhook
from crm_pipeline_tests import landing_builder
from crm_pipeline_tests.alert_endpoint import TOKEN, Endpoint, alert
from crm_pipeline_tests.conftest import bind
from crm_pipeline_tests.landing_builder import DAY1, DAY2


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    served = Endpoint([])
    yield served
    served.close()


@pytest.fixture(scope="module")
def failed_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dg.RunFailureSensorContext]:
    """The context the daemon gives the sensor for a failed run: the daily job over two days,
    with the shop's database gone."""
    tmp_path = tmp_path_factory.mktemp("failed_run")
    (tmp_path / "zone").mkdir()
    zone = landing_builder.build(tmp_path / "zone")
    (zone / landing.SHOP_DATABASE_FILE).unlink()
    home = tmp_path / "dagster_home"
    home.mkdir()
    instance = dg.DagsterInstance.local_temp(str(home))
    resources = {**bind(zone, tmp_path / "warehouse.duckdb"), "alert_webhook": AlertWebhook()}
    yield _failed(resources, instance, DAY2)
    instance.dispose()


def _failed(
    resources: dict, instance: dg.DagsterInstance, last: str, first: str = DAY1
) -> dg.RunFailureSensorContext:
    """The context the daemon gives the sensor for a failed daily_refresh of first..last."""
    result = (
        definitions(resources)
        .resolve_job_def("daily_refresh")
        .execute_in_process(instance=instance, tags=range_tags(first, last), raise_on_error=False)
    )
    assert not result.success
    return dg.build_run_status_sensor_context(
        sensor_name="failed_run_alert",
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
    ).for_run_failure()


def test_a_failed_run_posts_its_days_each_failed_step_its_cause_and_a_link(
    failed_run: dg.RunFailureSensorContext, endpoint: Endpoint
) -> None:
    assert alert(failed_run, endpoint.url) is None
    [(path, kind, body)] = endpoint.posts
    assert (path, kind) == (f"/hooks/{TOKEN}", "application/json")
    posted = json.loads(body)
    run_id = failed_run.dagster_run.run_id
    lines = posted["text"].splitlines()
    assert lines[0] == f"crm-pipeline run {run_id} (daily_refresh, days {DAY1}..{DAY2}) failed."
    # The shop's three tables, each its step, source and days; their one cause said once.
    assert [line.split(":")[0] for line in lines[1:4]] == [
        "- raw__online_accounts",
        "- raw__online_order_items",
        "- raw__online_orders",
    ]
    assert lines[3].startswith(
        f"- raw__online_orders: raw.online_orders failed for partitions {DAY1}..{DAY2}, reading "
        "the online shop database"
    )
    assert "Cause: ShopSchemaError: No online shop database" in lines[1]
    assert lines[2].endswith("table 'order_items'. Cause: as above.")
    assert lines[-1] == f"https://dagster.example.com/runs/{run_id}"
    assert len(lines) == 5
    assert posted["crm_pipeline"] == {
        "run_id": run_id,
        "job": "daily_refresh",
        "first_day": DAY1,
        "last_day": DAY2,
        "failed_steps": ["raw__online_accounts", "raw__online_order_items", "raw__online_orders"],
        "failed_checks": [],
    }


def _not_sent(context: dg.RunFailureSensorContext, url: str) -> str:
    """What the tick says of a post the endpoint did not take; the run's log says it too."""
    skipped = alert(context, url)
    assert isinstance(skipped, dg.SkipReason)
    said = skipped.skip_message
    run_id = context.dagster_run.run_id
    assert said.startswith(f"Run {run_id}: The failed run's alert was not sent to the webhook")
    logged = [e.message for e in context.instance.all_logs(run_id)]
    assert said.removeprefix(f"Run {run_id}: ") == logged[-1]
    return said


def test_an_endpoint_that_is_down_is_tried_again_and_one_that_refuses_is_named_without_its_token(
    failed_run: dg.RunFailureSensorContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhook, "RETRY_WAITS", (0.1, 0.1))
    monkeypatch.setattr(webhook, "_down_until", [0.0])
    busy = Endpoint([503, 503])
    try:
        assert alert(failed_run, busy.url) is None  # taken on the third try
        assert len(busy.posts) == 3 and busy.posts[0][2] == busy.posts[2][2]
        # One the endpoint never took: the tick's next run tries once, so a tick of several
        # failed runs ends within the sensor's minute (and its cursor is kept).
        busy.statuses = [503] * 10
        assert "HTTP 503" in _not_sent(failed_run, busy.url)
        assert len(busy.posts) == 6
        _not_sent(failed_run, busy.url)
        assert len(busy.posts) == 7
    finally:
        busy.close()
    monkeypatch.setattr(webhook, "_down_until", [0.0])
    # A user and password in the URL go as basic auth, never into a message.
    port = Endpoint([404])
    secret = f"http://alerts:S3CRET@127.0.0.1:{port.server.server_port}/hooks/{TOKEN}"
    try:
        said = _not_sent(failed_run, secret)
        assert len(port.posts) == 1  # a wrong URL is not posted to again
    finally:
        port.close()
    assert f"the webhook at 127.0.0.1:{port.server.server_port} (CRM_ALERT_WEBHOOK)" in said
    assert "HTTP 404" in said
    # Gone altogether, or no URL a request can be made of: the secrets still unsaid.
    for url in (secret, f"http://127.0.0.1:1/hooks/{TOKEN} with a space"):
        said += _not_sent(failed_run, url)
    assert TOKEN not in said and "S3CRET" not in said
    # An address left open is no URL: said so, as the tick's skip (it broke the tick).
    skipped = alert(failed_run, f"https://[::1/hooks/{TOKEN}")
    assert isinstance(skipped, dg.SkipReason)
    assert skipped.skip_message.endswith(
        ": CRM_ALERT_WEBHOOK is no http:// or https:// URL: correct it."
    )


def test_a_run_that_failed_before_any_step_posts_why(
    tmp_path: Path, endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhook, "_down_until", [0.0])
    monkeypatch.setenv("CRM_TEST_AS_OF", "2025-13-45")
    instance = dg.DagsterInstance.local_temp(str(tmp_path))
    resources = {
        **bind(tmp_path / "zone", tmp_path / "warehouse.duckdb"),
        "analysis": AnalysisSettings(as_of=dg.EnvVar("CRM_TEST_AS_OF")),
        "alert_webhook": AlertWebhook(),
    }
    try:
        context = _failed(resources, instance, DAY1)
        assert alert(context, endpoint.url) is None
    finally:
        instance.dispose()
    [(_, _, body)] = endpoint.posts
    lines = json.loads(body)["text"].splitlines()
    assert lines[1].startswith('- Execution of run for "daily_refresh" failed.')
    assert " Cause: " in lines[1]
    assert "analysis.as_of is '2025-13-45': give a day as YYYY-MM-DD" in lines[1]


def test_a_user_and_password_in_the_url_are_sent_as_basic_auth(
    failed_run: dg.RunFailureSensorContext, endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhook, "_down_until", [0.0])
    url = endpoint.url.replace("http://", "http://alerts:S3CRET@")
    assert alert(failed_run, url) is None
    [(path, _, _)] = endpoint.posts
    assert path == f"/hooks/{TOKEN}"
    assert endpoint.auth == ["Basic " + base64.b64encode(b"alerts:S3CRET").decode()]


def test_without_a_webhook_the_sensor_says_why_it_posted_nothing(
    failed_run: dg.RunFailureSensorContext,
) -> None:
    skipped = alert(failed_run, "")
    assert isinstance(skipped, dg.SkipReason)
    assert "CRM_ALERT_WEBHOOK is not set" in skipped.skip_message
    # The sensor is loaded, stopped until switched on, and watches this code location's runs.
    sensor = defs.resolve_sensor_def("failed_run_alert")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED


def test_a_run_a_blocking_check_stopped_posts_what_the_check_found(
    tmp_path: Path, endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhook, "_down_until", [0.0])
    (tmp_path / "zone").mkdir()
    zone = landing_builder.build(tmp_path / "zone")
    instance = dg.DagsterInstance.local_temp(str(tmp_path))
    resources = {**bind(zone, tmp_path / "warehouse.duckdb"), "alert_webhook": AlertWebhook()}
    job = definitions(resources).resolve_job_def("daily_refresh")
    try:
        # DAY1 left half-loaded, as a run killed after its raw steps leaves it: its raw rows
        # are in, none of them staged. The next day's run stops at the rows_conserved check.
        raw = [key for key in job.asset_layer.executable_asset_keys if key.path[0] == "raw"]
        loaded = job.execute_in_process(instance=instance, partition_key=DAY1, asset_selection=raw)
        assert loaded.success
        context = _failed(resources, instance, DAY2, first=DAY2)
        assert alert(context, endpoint.url) is None
    finally:
        instance.dispose()
    [(_, _, body)] = endpoint.posts
    posted = json.loads(body)
    text = posted["text"]
    assert "- failed check core/quality_report rows_conserved: Rows unaccounted for:" in text
    assert f"| {DAY1} 00:00:00 |" in text, text
    assert posted["crm_pipeline"]["failed_checks"] == ["core/quality_report rows_conserved"]
