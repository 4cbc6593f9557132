"""A delivered file as the raw layer sees it: its bytes, its name in lineage, its partition."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Delivery:
    """One delivered file: where it is, its name as recorded in lineage, and its partition."""

    path: Path
    name: str
    partition_date: str | None
    content: bytes

    @property
    def data_lines(self) -> int:
        """Non-empty physical lines, excluding the CSV header (the count conservation uses)."""
        return sum(1 for line in self.content.split(b"\n") if line.strip(b"\r"))

    def line_text(self, byte_offset: int, shown: str) -> str:
        """The line of a record DuckDB could not decode, undecodable bytes escaped.

        DuckDB's byte position points at the line's start, at the character after it, or at
        a blank line before it, depending on line endings; the candidate that starts like
        what DuckDB shows (it prints undecodable bytes as '?') is the one.
        """
        wanted = shown.rstrip("\r\n").lstrip("\r\n")
        candidates = []
        for offset in (byte_offset - 1, byte_offset):
            start = self.content.rfind(b"\n", 0, max(offset, 0)) + 1
            while start < len(self.content) and not self._line_from(start).strip():
                start = self.content.find(b"\n", start) + 1 or len(self.content)
            candidates.append(self._line_from(start))
        prefix = wanted.split("?")[0]
        for raw in candidates:
            if raw.decode("utf-8", errors="replace").startswith(prefix):
                return raw.decode("utf-8", errors="backslashreplace")
        return candidates[0].decode("utf-8", errors="backslashreplace")

    def _line_from(self, start: int) -> bytes:
        end = self.content.find(b"\n", start)
        return self.content[start : end if end >= 0 else len(self.content)].rstrip(b"\r")


def deliveries(paths: list[tuple[Path, str, str | None]]) -> list[Delivery]:
    """Read each file once; the bytes serve the header, the line count and reject texts."""
    return [Delivery(p, name, day, p.read_bytes()) for p, name, day in paths]
