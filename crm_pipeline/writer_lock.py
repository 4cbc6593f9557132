"""One crm-pipeline command at a time on a warehouse: `materialize`, `erase` and `rekey` hold
a lock file beside it (`<warehouse>.lock`) for as long as they run.

DuckDB's own lock lasts as long as a connection, and a run opens one per step: two commands
started together would take the file in turns between their steps and fail each other's
(whichever step found it taken), losing the run that was under way. The lock file is taken
with flock, which the system releases when the process ends, however it ends: a killed command
leaves no stale lock. Processes it forks (staging's normaliser pool) close their copy at once,
so one left behind by a killed command does not hold it either. A run of a Dagster instance
(launched from the UI) does not take it, its queue and pool order those, but each of its steps
waits while a command holds it (WarehouseResource.connect), so it cannot write between a
command's steps; a command refuses to start while such a run has not ended
(run.runs_not_ended).
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

from crm_pipeline.failures import ActionableError

# How the lock file's line writes since when its command has held it.
_SINCE = "%Y-%m-%d %H:%M:%S UTC"
# The descriptor of the lock this process holds, if any: a forked child closes its copy.
_held: list[int] = []


def _close_in_child() -> None:
    for fd in _held:
        os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


class WarehouseBusy(ActionableError):
    """Another crm-pipeline command is writing the warehouse, or its lock file cannot be
    opened."""


def lock_path(warehouse: str) -> Path:
    return Path(warehouse).with_name(Path(warehouse).name + ".lock")


def _open(path: Path) -> tuple[int, bool]:
    """The lock file open, and whether it can be written (flock takes a read-only one too:
    a lock file another user made, on a warehouse folder shared by a group)."""
    # A link in its place is not followed: whoever can write the folder could point it at a
    # file this user owns, which taking the lock would overwrite.
    nofollow = os.O_NOFOLLOW
    try:
        # 644: it holds a process id, a time and a command name, nothing personal.
        return os.open(path, os.O_RDWR | os.O_CREAT | nofollow, 0o644), True
    except PermissionError:
        pass
    except OSError as error:
        if error.errno != errno.ELOOP:
            raise
        raise WarehouseBusy(
            f"The warehouse's lock file {path} is a link; a command that writes the warehouse "
            "writes its lock file there. Remove the link, then run the command again."
        ) from None
    try:
        return os.open(path, os.O_RDONLY | nofollow), False
    except OSError as error:
        raise WarehouseBusy(
            f"Cannot open the warehouse's lock file {path} ({error.strerror}): a command that "
            "writes the warehouse holds it while it runs. Let this user write the warehouse's "
            "folder (CRM_WAREHOUSE), or read the file if another made it."
        ) from None


@contextmanager
def sole_writer(warehouse: str, command: str) -> Iterator[None]:
    """Hold the warehouse's lock file while the block runs, as `crm-pipeline <command>` (its
    arguments are not written: an erasure's name whom it erases); WarehouseBusy, naming the
    command that holds it, when another process does."""
    path = lock_path(warehouse)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not truncated on open: the holder's line stays readable until this process holds it.
    fd, writable = _open(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WarehouseBusy(
                f"Another crm-pipeline command is writing the warehouse {warehouse} "
                f"({_held_by(path) or 'its lock file ' + str(path) + ' is held'}): wait until "
                "it ends, then run this one. Two at once would fail each other's steps on "
                "the warehouse."
            ) from None
        _held.append(fd)
        if writable:
            os.ftruncate(fd, 0)
            since = datetime.now(UTC).strftime(_SINCE)
            os.write(fd, f"{os.getpid()}\t{since}\tcrm-pipeline {command}\n".encode())
        yield
    finally:
        if fd in _held:
            _held.remove(fd)
        os.close(fd)  # releases the lock


def held_for(stack: ExitStack, warehouse: str, command: str) -> str | None:
    """Take the warehouse's lock until `stack` closes (a command's whole run); the refusal to
    print when another command holds it, or the lock file cannot be opened."""
    try:
        stack.enter_context(sole_writer(warehouse, command))
    except WarehouseBusy as error:
        return str(error)
    except (OSError, ValueError):
        # No folder can be made for it (or CRM_WAREHOUSE names no file): nor can the
        # warehouse be written, and the run's first step says so, naming the setting.
        return None
    return None


def holder(warehouse: str) -> str | None:
    """The crm-pipeline command of another process holding the warehouse's lock file, if any.
    Read from the system's lock table (/proc/locks), without taking the lock even for a moment
    (a probe would make a command starting then refuse)."""
    if not holders(warehouse):
        return None
    path = lock_path(warehouse)
    return _held_by(path) or f"its lock file {path} is held"


def holders(warehouse: str) -> set[int]:
    """The processes other than this one holding the warehouse's lock file."""
    try:
        return _holders(lock_path(warehouse)) - {os.getpid()}
    except (OSError, ValueError):  # no lock file, or CRM_WAREHOUSE names no file
        return set()


def _holders(path: Path) -> set[int]:
    """The processes holding the lock file, from the system's lock table."""
    found = path.stat()
    where = f"{os.major(found.st_dev):02x}:{os.minor(found.st_dev):02x}:{found.st_ino}"
    holders = set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 4087 fe:00:2204296 0 EOF"; a waiter's line has "->".
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == where:
            holders.add(int(fields[4]))
    return holders


def held_since(warehouse: str) -> datetime | None:
    """Since when the command holding the warehouse's lock file has held it (UTC, as its line
    says), or None when no line says: the line is taken only when it is the holder's (a lock
    file opened read-only keeps the line of an earlier command, and a new holder writes its
    own a moment after taking the lock)."""
    try:
        path = lock_path(warehouse)
        pid, since, _ = path.read_text().splitlines()[0].split("\t", 2)
        if int(pid) not in _holders(path):
            return None
        return datetime.strptime(since, _SINCE).replace(tzinfo=UTC)
    except (OSError, IndexError, ValueError):
        return None


def _held_by(path: Path) -> str | None:
    """The holder as its line says: its process id, since when, and its command."""
    try:
        pid, since, command = path.read_text().splitlines()[0].split("\t", 2)
    except (OSError, IndexError, ValueError):
        return None
    return f"pid {pid}, since {since}: {command}"
