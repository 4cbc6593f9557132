"""The webhook failed runs are posted to (CRM_ALERT_WEBHOOK; see crm_pipeline.alerts)."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from urllib.parse import unquote, urlsplit

import dagster as dg
from pydantic import Field

POST_TIMEOUT_SECONDS = 5
# Seconds between tries of a post the endpoint did not take. A sensor tick has a minute for
# up to five failed runs: after one post failed every try, the tick's others try once.
RETRY_WAITS = (1, 2)
# Until when (time.monotonic) the endpoint is taken as down: posts try once.
_down_until: list[float] = [0.0]


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
        """POST the payload as JSON, trying again when the endpoint is down or busy; an
        AlertNotSent naming the endpoint's host (never the token or password its URL holds)
        when it does not take it. A user and password in the URL are sent as basic auth."""
        try:
            parts = urlsplit(self.url)
            where = (parts.hostname or "") + (f":{parts.port}" if _port(parts) else "")
        except ValueError:  # an address in brackets left open: its message quotes nothing
            parts = where = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise AlertNotSent("CRM_ALERT_WEBHOOK is no http:// or https:// URL: correct it.")
        headers = {"Content-Type": "application/json"}
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        bare = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        waits = RETRY_WAITS if time.monotonic() >= _down_until[0] else ()
        for wait in (*waits, None):
            try:
                request = urllib.request.Request(
                    bare, data=json.dumps(payload).encode(), headers=headers, method="POST"
                )
                with urllib.request.urlopen(request, timeout=POST_TIMEOUT_SECONDS) as response:
                    response.read()
                _down_until[0] = 0.0
                return
            except urllib.error.HTTPError as error:
                why = f"it answered HTTP {error.code} {error.reason}"
                if error.code < 500 and error.code != 429:  # the post or URL is wrong
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
                # The reason names no URL (refused, a name not found, timed out).
                why = f"it could not be reached ({getattr(error, 'reason', error)})"
            except Exception as error:  # noqa: BLE001 - its text may quote the URL's token
                why = f"the URL could not be used ({type(error).__name__})"
                break
            if wait is not None:
                time.sleep(wait)
        _down_until[0] = time.monotonic() + 60
        raise AlertNotSent(
            f"The failed run's alert was not sent to the webhook at {where or '?'} "
            f"(CRM_ALERT_WEBHOOK): {why}. The run's failure stays in the UI (Runs)."
        )


def _port(parts) -> int | None:
    """The URL's port, None when it gives none or one that is no number."""
    try:
        return parts.port
    except ValueError:
        return None


class AlertNotSent(Exception):
    """A webhook that could not be reached or refused a post."""
