"""The webhook failed runs are posted to (CRM_ALERT_WEBHOOK; see crm_pipeline.alerts)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import dagster as dg
from pydantic import Field

POST_TIMEOUT_SECONDS = 10
# Seconds between tries of a post the endpoint did not take (within a sensor tick's minute).
RETRY_WAITS = (2, 4)


class AlertWebhook(dg.ConfigurableResource):
    """Where failed runs are told (the sensor failed_run_alert)."""

    url: str = Field(
        default="",
        description="CRM_ALERT_WEBHOOK: the URL failed runs are posted to as JSON (empty: "
        "none). It usually holds a token: keep it in the environment, never in code.",
    )
    ui_url: str = Field(
        default="",
        description="CRM_UI_URL: the Dagster UI's address as operators reach it "
        "(https://dagster.example.com), for a link to the run in the post.",
    )

    def post(self, payload: dict) -> None:
        """POST the payload as JSON, trying again after 2 and 4 s when the endpoint is down or
        busy; an AlertNotSent naming the endpoint's host (never the token its URL holds) when
        it does not take it."""
        where = urlsplit(self.url).netloc.rpartition("@")[2]
        if urlsplit(self.url).scheme not in ("http", "https") or not where:
            raise AlertNotSent("CRM_ALERT_WEBHOOK is no http:// or https:// URL: correct it.")
        request = urllib.request.Request(
            self.url,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        for wait in (*RETRY_WAITS, None):
            try:
                with urllib.request.urlopen(request, timeout=POST_TIMEOUT_SECONDS) as response:
                    response.read()
                return
            except urllib.error.HTTPError as error:
                why = f"it answered HTTP {error.code} {error.reason}"
                if error.code < 500 and error.code != 429:  # the post or URL is wrong
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
                why = f"it could not be reached ({getattr(error, 'reason', error)})"
            if wait is not None:
                time.sleep(wait)
        raise AlertNotSent(
            f"The failed run's alert was not sent to the webhook at {where} "
            f"(CRM_ALERT_WEBHOOK): {why}. The run's failure stays in the UI (Runs)."
        )


class AlertNotSent(Exception):
    """A webhook that could not be reached or refused a post."""
