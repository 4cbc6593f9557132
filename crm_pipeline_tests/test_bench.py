"""The benchmark command, run for real at a tiny scale: what it prints is what a note reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from crm_pipeline.bench import DAILY, LAYERS


def test_bench_times_generation_the_floor_every_layer_and_a_daily_run(tmp_path: Path) -> None:
    command = Path(sys.executable).with_name("crm-pipeline")
    layers = ",".join((*LAYERS, DAILY))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "DAGSTER_HOME"))}
    run = subprocess.run(
        [
            command,
            "bench",
            "--customers",
            "200",
            "--days",
            "5",
            "--workdir",
            tmp_path,
            "--layers",
            layers,
        ],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout)
    assert report["generate"]["wall_s"] > 0 and report["generate"]["peak_rss_mb"] > 0
    floor = report["floor_read_inputs"]
    assert floor["duckdb_files_s"] >= 0 and floor["shop_via_adbc_s"] >= 0
    # Staging and core run as one run (issue 3's figure); each other layer in its own.
    together = report["staging+core"]
    assert together["wall_s"] > 0 and together["peak_rss_mb"] > 0
    for layer in LAYERS:
        step = report[layer]
        took = step["wall_s"] if layer in ("raw", "analytics", "mining") else step["steps_s"]
        assert 0 < step["steps_s"] <= took and step["rows"] > 0, layer
        assert step["x_floor"] == round(took / floor["wall_s"], 2), layer
    assert report["staging"]["steps_s"] + report["core"]["steps_s"] < together["wall_s"]
    assert report["order_lines"] > 0
    identity = report["identity"]
    assert 0.9 <= identity["precision"] <= 1 and 0.9 <= identity["recall"] <= 1
    daily = report[DAILY]
    assert daily["day"] == "2025-01-05"  # the last delivered day of the scale
    # Where a daily run's time went: each layer's steps, and the slowest steps, slowest first.
    assert set(LAYERS) <= set(daily["layer_seconds"])
    assert 0 < sum(daily["layer_seconds"].values()) < daily["wall_s"]
    slowest = list(daily["slowest_steps"].values())
    assert len(slowest) == 12 and slowest == sorted(slowest, reverse=True)
    assert {step.split(".")[0] for step in daily["slowest_steps"]} <= {*LAYERS, "warehouse"}
    full = sum(report[run]["wall_s"] for run in ("raw", "staging+core", "analytics", "mining"))
    assert report["daily_share_of_full"] == round(report[DAILY]["wall_s"] / full, 3)
    # The same step time split: the day's event data, the customer-level recompute, publishing.
    parts = daily["work_seconds"]
    assert abs(sum(parts.values()) - sum(daily["layer_seconds"].values())) < 0.05
    customer_level = sum(daily["layer_seconds"][layer] for layer in ("analytics", "mining"))
    assert parts["customer_level"] > customer_level  # and core.customers
    assert parts["publish"] == daily["layer_seconds"]["warehouse"]
    assert report["daily_parts_share_of_full"] == {
        part: round(seconds / full, 3) for part, seconds in parts.items()
    }
