"""The ground truth beside the landing zone: who is who, what is broken, and what was written.

identities.csv and defects.csv are appended day by day; summary.json is written at the end
from running counts, so nothing here grows with the date range except the per-day counts.
"""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from crm_pipeline.generate.defects import DefectRow

IDENTITY_COLUMNS = ("source", "source_id", "person_id")
DEFECT_COLUMNS = ("source", "partition", "file", "record_id", "line", "defect", "detail")


class Manifest:
    """Open writers for the manifest files plus the counts that go into summary.json."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self._files = {
            name: (folder / name).open("w", newline="", encoding="utf-8")
            for name in ("identities.csv", "defects.csv")
        }
        self._identities = csv.writer(self._files["identities.csv"], lineterminator="\n")
        self._defects = csv.writer(self._files["defects.csv"], lineterminator="\n")
        self._identities.writerow(IDENTITY_COLUMNS)
        self._defects.writerow(DEFECT_COLUMNS)
        self.rows: dict[str, dict[str, int]] = defaultdict(dict)
        self.totals: Counter[str] = Counter()
        self.lines: dict[str, int] = {}
        self.defect_counts: Counter[str] = Counter()
        self.identity_counts: Counter[str] = Counter()

    def identities(self, source: str, ids: np.ndarray, persons: np.ndarray) -> None:
        self._identities.writerows(
            (source, i, f"P{p:07d}") for i, p in zip(ids, persons, strict=True)
        )
        self.identity_counts[source] += len(ids)

    def defects(self, rows: Iterable[DefectRow]) -> None:
        for row in rows:
            self._defects.writerow(row)
            self.defect_counts[row[5]] += 1

    def delivered(
        self,
        source: str,
        day: str | None,
        rows: int,
        file: str | None = None,
        lines: int | None = None,
    ) -> None:
        """Rows written for a source (and day); data lines of a file when it is a file."""
        if day is not None:
            self.rows[source][day] = self.rows[source].get(day, 0) + rows
        self.totals[source] += rows
        if file is not None:
            self.lines[file] = rows if lines is None else lines

    def close(self, summary: dict) -> dict:
        for f in self._files.values():
            f.close()
        summary |= {
            "rows": dict(sorted(self.totals.items())),
            "rows_per_day": {s: self.rows[s] for s in sorted(self.rows)},
            "data_lines_per_file": dict(sorted(self.lines.items())),
            "defects": dict(sorted(self.defect_counts.items())),
            "identities": dict(sorted(self.identity_counts.items())),
        }
        (self.folder / "summary.json").write_text(
            json.dumps(summary, indent=1, ensure_ascii=False) + "\n"
        )
        return summary
