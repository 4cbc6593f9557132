"""A webhook endpoint of the tests' own, and the failed-run alert evaluated as the daemon does."""

from __future__ import annotations

import contextvars
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg

from crm_pipeline.alerts import failed_run_alert
from crm_pipeline.webhook import AlertWebhook

TOKEN = "T0KEN-in-the-path"


class Endpoint:
    """A webhook endpoint on 127.0.0.1 that answers each post with the next status given
    (then 200) and keeps what it was sent."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses, self.posts, self.auth = list(statuses), [], []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                endpoint.posts.append((self.path, self.headers["Content-Type"], body))
                endpoint.auth.append(self.headers["Authorization"])
                self.send_response(endpoint.statuses.pop(0) if endpoint.statuses else 200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/{TOKEN}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def alert(context: dg.RunFailureSensorContext, url: str) -> dg.SkipReason | None:
    hook = AlertWebhook(url=url, ui_url="https://dagster.example.com/")
    # Evaluated in a context of its own, as test_automation's schedule is (Dagster 1.13 sets
    # its current instance and does not reset it).
    return contextvars.copy_context().run(failed_run_alert, context, alert_webhook=hook)
