"""Telling operators that a run failed without their watching the UI: the sensor
`failed_run_alert` posts each failed run of this code location to a webhook (CRM_ALERT_WEBHOOK).

The post is JSON with a `text` field, as Slack's and Mattermost's incoming webhooks and most
chat and paging relays take it, and the run's facts beside it (`crm_pipeline`) for a relay that
routes on them. The text says what the run's failure message says in the UI: which job, which
days, and per failed step its source, partitions and cause. Like the sensors of
crm_pipeline.automation it starts stopped; switch it on in the UI (Automation). A post is tried
three times; one the endpoint never takes is said, with why, in the failed run's log and the
sensor's tick (Dagster does not evaluate a run twice), and a sent one is noted in the log too.
"""

from __future__ import annotations

import dagster as dg

from crm_pipeline.run import (
    RANGE_END,
    RANGE_START,
    causes_once,
    check_finding,
    failure_cause,
    step_failure,
)
from crm_pipeline.webhook import AlertNotSent, AlertWebhook

# The failed steps a post lists (a run failed by one cause fails many steps alike).
LISTED_STEPS = 5


def ended_from_outside(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """What ended the run from outside its process, as Dagster recorded it: the code server
    seeing its process killed (a signal: the system out of memory, `kill -9`), or run
    monitoring cancelling it (the maximum runtime). Where no step failed, the run's own
    failure message says only that it was marked failed."""
    records = instance.get_records_for_run(
        run_id, of_type={dg.DagsterEventType.ENGINE_EVENT, dg.DagsterEventType.RUN_CANCELING}
    ).records
    said: list[str] = []
    for record in records:
        event = record.event_log_entry.dagster_event
        message = (event.message or "").strip()
        outside = event.event_type == dg.DagsterEventType.RUN_CANCELING or message.startswith(
            "[DagsterApiServer]"
        )
        if outside and message and message not in said:
            said.append(message)
    return said


def failed_blocking_checks(instance: dg.DagsterInstance, run_id: str) -> list[list[str]]:
    """Each blocking check the run failed, as `crm-pipeline materialize` prints it: what it
    found (rows, partitions), where its step's failure says only which check failed."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ).records
    evaluations = [record.event_log_entry.dagster_event.event_specific_data for record in records]
    return [
        check_finding(evaluation)
        for evaluation in evaluations
        if not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    ]


def alert_payload(
    run: dg.DagsterRun,
    failures: list[str],
    run_failure: str,
    ui_url: str,
    checks: list[list[str]] | None = None,
) -> dict:
    """What a failed run's post says: the text operators read and the facts beside it.
    failures: 'step: message' per failed step, as the UI shows them; run_failure: the run's
    own failure message (all there is when it failed before any step), then what ended it
    from outside, if anything did; checks: the blocking checks it failed (failed_blocking_checks)."""
    job = "assets launched from the UI" if run.job_name.startswith("__") else run.job_name
    first = run.tags.get(RANGE_START) or run.tags.get("dagster/partition")
    last = run.tags.get(RANGE_END) or first
    days = f"days {first}..{last}" if first and last != first else f"day {first}" if first else ""
    lines = [f"crm-pipeline run {run.run_id} ({job}{', ' + days if days else ''}) failed."]
    lines += [f"- {message}" for message in causes_once(failures)[:LISTED_STEPS]]
    if len(failures) > LISTED_STEPS:
        lines.append(f"- and {len(failures) - LISTED_STEPS} more failed step(s).")
    if not failures:
        lines.append(f"- {run_failure}")
    for head, *found in (checks or [])[:LISTED_STEPS]:
        lines.append(f"- failed check {head}")
        lines += [f"  {line}" for line in found]
    if ui_url:
        lines.append(f"{ui_url.rstrip('/')}/runs/{run.run_id}")
    return {
        "text": "\n".join(lines),
        "crm_pipeline": {
            "run_id": run.run_id,
            "job": run.job_name,
            "first_day": first,
            "last_day": last,
            "failed_steps": [f.partition(": ")[0] for f in failures],
            "failed_checks": [head.partition(": ")[0] for head, *_ in checks or []],
        },
    }


@dg.run_failure_sensor(
    name="failed_run_alert",
    description="Posts every failed run of this code location, with the cause of each failed "
    "step, to the webhook in CRM_ALERT_WEBHOOK (Slack, Mattermost, or any endpoint taking JSON).",
    default_status=dg.DefaultSensorStatus.STOPPED,
    minimum_interval_seconds=30,
)
def failed_run_alert(
    context: dg.RunFailureSensorContext, alert_webhook: AlertWebhook
) -> dg.SkipReason | None:
    if not alert_webhook.url:
        return dg.SkipReason(
            f"Run {context.dagster_run.run_id} failed; no alert posted: CRM_ALERT_WEBHOOK is "
            "not set where the daemon runs."
        )
    failures = [
        f"{event.step_key}: {step_failure(event)}" for event in context.get_step_failure_events()
    ]
    event = context.failure_event
    run_failure = " ".join(
        [
            f"{event.message or 'no message recorded'}{failure_cause(event)}",
            *ended_from_outside(context.instance, context.dagster_run.run_id),
        ]
    )
    try:
        alert_webhook.post(
            alert_payload(
                context.dagster_run,
                failures,
                run_failure,
                alert_webhook.ui_url,
                failed_blocking_checks(context.instance, context.dagster_run.run_id),
            )
        )
    except AlertNotSent as error:
        # Said where an operator looks: the failed run's log, and this tick (one tick may
        # handle several runs, so a raised error would name none of them).
        context.instance.report_engine_event(str(error), dagster_run=context.dagster_run)
        return dg.SkipReason(f"Run {context.dagster_run.run_id}: {error}")
    return None
