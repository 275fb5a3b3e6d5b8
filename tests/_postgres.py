"""A throwaway PostgreSQL server for the tests that run against one.

Collected where a PostgreSQL server and the psycopg2 driver are installed, or when
ARCHSPACE_PG=1 (then a server that cannot be started fails the test loudly).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


PG_WANTED = os.environ.get("ARCHSPACE_PG") == "1"
PG_AVAILABLE = _pg_bin() is not None and importlib.util.find_spec("psycopg2") is not None


def server():
    """Start a throwaway PostgreSQL server on loopback (as the postgres user when run as root),
    yield its URL, stop it (the ``postgres_url`` fixture of conftest.py)."""
    bindir = _pg_bin()
    assert bindir is not None, "ARCHSPACE_PG=1 but no PostgreSQL server is installed (initdb not found)"
    assert importlib.util.find_spec("psycopg2"), "ARCHSPACE_PG=1 but psycopg2 is not installed"
    folder = Path(tempfile.mkdtemp(prefix="archspace-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        import pwd

        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = folder / "data"

    def pg(*args: str) -> None:
        r = subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=120, cwd=folder)
        assert r.returncode == 0, f"{' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"

    try:
        pg(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "-t", "60", "-o",
           f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off", "start")
        pg(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "archspace")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/archspace"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                           capture_output=True, timeout=60, cwd=folder)
        shutil.rmtree(folder, ignore_errors=True)
