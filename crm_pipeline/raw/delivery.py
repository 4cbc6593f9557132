"""A delivered file as the raw layer sees it: its bytes, its name in lineage, its partition."""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

# Rules that set a file aside whole: its header lacks or repeats a contract column, it is
# UTF-16 or not text at all, its lines end in bare carriage returns (or, a CSV, in both CRLF
# and LF).
WHOLE_FILE_RULES = ("header_mismatch", "utf16_text", "not_text", "line_breaks")


# A CSV's quoted values (a quote opens one only at a field's start: 12" screen is no quote)
# and its line ends, in the order they come.
_CSV_TOKENS = re.compile(rb'(?:(?<=,)|(?<=\n)|^)"(?:[^"]|"")*"|\r?\n|\r')


@dataclass(frozen=True)
class Delivery:
    """One delivered file: where it is, its name as recorded in lineage, and its partition."""

    path: Path
    name: str
    partition_date: str | None
    content: bytes

    @cached_property
    def utf16(self) -> bool:
        """Whether it is UTF-16 text: a byte order mark, or Latin text's every other byte NUL."""
        start = self.content[:64]
        halves = (start[0::2], start[1::2])
        return self.content.startswith((b"\xff\xfe", b"\xfe\xff")) or (
            len(start) >= 4 and any(h.count(0) == len(h) for h in halves)
        )

    @cached_property
    def text(self) -> bytes:
        """Its bytes, UTF-16 text as UTF-8 (undecodable pairs replaced)."""
        return (
            self.content.decode("utf-16", errors="replace").encode() if self.utf16 else self.content
        )

    @cached_property
    def line_break(self) -> bytes:
        """What ends its lines: a line feed (after a carriage return or not), or a bare
        carriage return in a file with no line feed at all (an old till's or Mac's export)."""
        text = self.text
        return b"\r" if b"\r" in text and b"\n" not in text else b"\n"

    @cached_property
    def mixed_line_breaks(self) -> bool:
        """Whether some of its lines end in CRLF and others, outside quoted values, in a bare
        LF (lines appended by another program): DuckDB's CSV reader cannot read such a file.
        A bare LF inside a quoted value (a spreadsheet's cell of two lines) is no line end."""
        text = self.text
        if b"\r\n" not in text or text.count(b"\n") == text.count(b"\r\n"):
            return False
        ends = {m.group() for m in _CSV_TOKENS.finditer(text) if not m.group().startswith(b'"')}
        return {b"\r\n", b"\n"} <= ends

    @cached_property
    def stray_carriage_returns(self) -> bool:
        """Whether, in a file whose lines end in LF, a carriage return outside quoted values
        ends no line: CR CR LF, as a file converted to CRLF twice has. DuckDB's CSV reader
        cannot read such a file."""
        text = self.text
        if b"\n" not in text or text.count(b"\r") == text.count(b"\r\n"):
            return False
        return any(m.group() == b"\r" for m in _CSV_TOKENS.finditer(text))

    @property
    def blank(self) -> bool:
        """Whether it holds nothing but blanks (and a UTF-8 byte order mark): no line at all."""
        return not self.content.removeprefix(codecs.BOM_UTF8).strip()

    def lines(self) -> list[bytes]:
        """Its non-empty physical lines, header included, without their line breaks (nor a
        byte order mark)."""
        text = self.text.removeprefix(codecs.BOM_UTF8)
        return [line.rstrip(b"\r") for line in text.split(self.line_break) if line.strip(b"\r")]

    @property
    def data_lines(self) -> int:
        """Non-empty physical lines, excluding the CSV header (the count conservation uses)."""
        return len(self.lines())

    def unreadable(self, csv: bool = True) -> tuple[str, str] | None:
        """Why the loader cannot read the file at all (its rule, one of WHOLE_FILE_RULES, and
        what to do), if it cannot; csv: it is read as CSV (JSON Lines takes mixed line ends)."""
        again = "deliver it again and re-materialize its source (a daily file: for its day)"
        if self.utf16:
            why = "UTF-16 text (what a spreadsheet saves as Unicode text); re-export it as UTF-8"
            return "utf16_text", f"{self.name}: {why}, {again}"
        if b"\x00" in self.content[:4096]:
            why = "not text (NUL bytes: a spreadsheet, an archive or an image?); export it as text"
            return "not_text", f"{self.name}: {why}, {again}"
        if self.line_break == b"\r":
            why = "its lines end in a bare carriage return (CR); re-export it with LF or CRLF"
            return "line_breaks", f"{self.name}: {why}, {again}"
        if csv and self.mixed_line_breaks:
            why = "its lines end some in CRLF, some in LF; re-export it with one kind"
            return "line_breaks", f"{self.name}: {why}, {again}"
        if csv and self.stray_carriage_returns:
            why = (
                "a carriage return (CR) outside a quoted value ends no line (CR CR LF: a file "
                "converted to CRLF twice?); re-export it with LF or CRLF"
            )
            return "line_breaks", f"{self.name}: {why}, {again}"
        return None

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
