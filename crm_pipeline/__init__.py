"""crm-pipeline: a batch CRM analytics pipeline on Dagster and DuckDB."""

import os
from collections.abc import Iterator
from contextlib import contextmanager

# numpy asks the kernel for transparent huge pages for large arrays. Where the kernel compacts
# memory to serve them on the fault (THP defrag "madvise", as on the benchmark machine), that
# costs more than it saves: at 1M customers the recommendations step spent 3 s more in the
# kernel and ran 2 s longer. Set before numpy is imported; a setting in the environment wins.
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")


class SettingError(ValueError):
    """A setting (an environment variable or a command-line option) holds a value the pipeline
    cannot use; the message names it and says what to give instead."""


def iso_day(text: str) -> str:
    """A day written YYYY-MM-DD, checked (ValueError otherwise) and written back so."""
    from datetime import datetime

    return datetime.strptime(text, "%Y-%m-%d").date().isoformat()


def replace_file(new: "os.PathLike[str] | str", target: "os.PathLike[str] | str") -> None:
    """Rename `new` over `target` in one step, keeping the target's permissions and group (as
    far as this user may set them): an operator who restricted a file (chmod 600 on the
    warehouse, 640 and a group on the published copy or the key secret) keeps it restricted
    when a run, a publish, an erasure or a rekey writes it anew. A file made for the first time
    has the process's umask."""
    import shutil

    if os.path.exists(target):
        shutil.copymode(target, new)
        try:
            os.chown(new, -1, os.stat(target).st_gid)
        except PermissionError:
            pass  # a group this user is not in: the file keeps the user's own
    os.replace(new, target)


@contextmanager
def as_private_as(path: "os.PathLike[str] | str") -> "Iterator[None]":
    """While the block runs, tighten this process's umask so that no file it writes is
    readable by more people than `path` is: DuckDB's WAL beside the warehouse, a rewrite or a
    copy being published, a marker. An operator's chmod 600 on the warehouse then holds for
    every file written about it (a WAL holds the rows being written). Never loosens the
    umask, puts it back after, and does nothing while `path` does not exist."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        yield
        return
    hidden = 0o077 & ~mode  # what group and others may not do with the file
    current = _umask()
    if not hidden & ~current:
        yield
        return
    os.umask(current | hidden)
    try:
        yield
    finally:
        os.umask(current)


def _umask() -> int:
    """The process's umask, read without changing it where Linux says it."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    current = os.umask(0o077)
    os.umask(current)
    return current


def code_digest(modules: "tuple[str, ...]", *versions: str, root: "str | None" = None) -> str:
    """A digest of the code of the package's modules and folders of modules ('raw',
    'landing.py') and the given library versions: what a record of work (a staged day, a model
    fit) is stamped with, so work done by other code is told apart after an upgrade. The code
    is taken as Python parses it, without comments and docstrings: rewording them is no other
    code. root: where the modules are (default: this package)."""
    import ast
    import hashlib
    from pathlib import Path

    here = Path(root or Path(__file__).parent)
    paths = [p for m in modules for p in (sorted((here / m).glob("*.py")) or [here / m])]
    digest = hashlib.sha256("|".join(versions).encode())
    for path in paths:
        tree = ast.parse(path.read_bytes())
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (
                isinstance(body, list)
                and body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
        digest.update(path.name.encode() + ast.dump(tree).encode())
    return digest.hexdigest()[:16]
