"""crm-pipeline: a batch CRM analytics pipeline on Dagster and DuckDB."""

import os

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


def code_digest(folders: "tuple[str, ...]", *versions: str) -> str:
    """A digest of the code in the package's folders (every module's bytes) and the given
    library versions: what a record of work (a staged day, a model fit) is stamped with, so
    work done by other code is told apart after an upgrade."""
    import hashlib
    from pathlib import Path

    here = Path(__file__).parent
    return hashlib.sha256(
        b"".join(path.read_bytes() for f in folders for path in sorted((here / f).glob("*.py")))
        + "|".join(versions).encode()
    ).hexdigest()[:16]
