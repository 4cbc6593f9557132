"""A throwaway PostgreSQL server for tests: Debian's binaries, a temporary cluster, 127.0.0.1."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from crm_pipeline_tests.conftest import free_port

# initdb refuses to run as root; Debian's package creates this system user for the server.
SERVER_USER = "postgres"


def server_binaries() -> Path:
    """The newest installed PostgreSQL's bin folder (initdb, pg_ctl)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3])
    )
    if not found:
        raise RuntimeError(
            "No PostgreSQL server under /usr/lib/postgresql/*/bin (initdb): install Debian's "
            "package with `apt-get install postgresql` (.ci/run does this)."
        )
    return Path(found[-1]).parent


def _as_server_user(folder: Path) -> list[str]:
    """The command prefix that runs the server as an unprivileged user: the postgres user when
    this process is root (chowning the folder to it), nobody else otherwise."""
    if os.geteuid() != 0:
        return []
    if shutil.which("runuser") is None:
        raise RuntimeError("Running as root, but runuser (util-linux) is missing: install it.")
    shutil.chown(folder, SERVER_USER, SERVER_USER)
    return ["runuser", "-u", SERVER_USER, "--"]


@contextmanager
def postgres_server(databases: tuple[str, ...]) -> Iterator[dict[str, str]]:
    """Start a server with the given databases; yields each database's SQLAlchemy URL (psycopg2
    driver) and stops the server on exit."""
    bin_dir = server_binaries()
    with tempfile.TemporaryDirectory(prefix="crm-postgres-") as tmp:
        folder = Path(tmp)
        run_as = _as_server_user(folder)
        data, log, port = folder / "data", folder / "server.log", free_port()

        def run(*args: str) -> None:
            # The server user may not enter the caller's working directory.
            done = subprocess.run(
                [*run_as, *args], check=False, cwd=folder, capture_output=True, text=True
            )
            if done.returncode != 0:
                server_log = log.read_text() if log.exists() else ""
                raise RuntimeError(
                    f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr}{server_log}"
                )

        run(
            str(bin_dir / "initdb"), "-D", str(data), "-U", SERVER_USER, "--auth=trust", "--no-sync"
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        run(str(bin_dir / "pg_ctl"), "start", "-w", "-D", str(data), "-l", str(log), "-o", options)
        try:
            base = f"postgresql+psycopg2://{SERVER_USER}@127.0.0.1:{port}"
            admin = sa.create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                for name in databases:
                    conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            admin.dispose()
            yield {name: f"{base}/{name}" for name in databases}
        finally:
            run(str(bin_dir / "pg_ctl"), "stop", "-m", "fast", "-D", str(data))
