"""A real, throwaway PostgreSQL server for tests and benchmarks.

`PgServer` runs Debian's binaries (/usr/lib/postgresql/*/bin, or initdb on
PATH): `initdb` into a fresh temporary directory, `pg_ctl start` listening
only on a Unix socket in that directory (no TCP port at all), and
`pg_ctl stop` + delete at the end. PostgreSQL refuses to run as root, so
under root the server runs as the `postgres` user (made by the Debian
package) or `nobody`.

`postgres_unavailable_reason()` says why a test must skip (no binaries, no
driver); under `CIRCLE_REQUIRE_POSTGRES=1` (set by .ci/run) a missing
server is a failure instead, so CI cannot go green by skipping.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path


def find_bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _run_as() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    return None


def postgres_unavailable_reason() -> str | None:
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as e:
        return f"the PostgreSQL driver is not installed ({e.name}); pip install -e '.[test]'"
    if find_bin_dir() is None:
        return ("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin or initdb on PATH); "
                "install Debian's 'postgresql' package (.ci/run does)")
    if os.geteuid() == 0 and _run_as() is None:
        return "running as root and no 'postgres' or 'nobody' user to run PostgreSQL as"
    return None


def require_postgres() -> None:
    """pytest.skip (or fail under CIRCLE_REQUIRE_POSTGRES=1) when no server can run."""
    import pytest

    reason = postgres_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CIRCLE_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required here (CIRCLE_REQUIRE_POSTGRES=1): {reason}")
    pytest.skip(reason)


class PgServer:
    """One PostgreSQL cluster in a temporary directory, reachable on a Unix socket."""

    USER = "circle"

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        bindir = find_bin_dir()
        if bindir is None:
            raise RuntimeError(postgres_unavailable_reason() or "no PostgreSQL")
        self.bindir = bindir
        self.settings = settings or {}
        self.dir = Path(tempfile.mkdtemp(prefix="circle-pg-"))
        self.data = self.dir / "data"
        self.logfile = self.dir / "server.log"
        self._user = _run_as()
        if self._user is not None:
            os.chown(self.dir, self._user.pw_uid, self._user.pw_gid)
        self.dir.chmod(0o755)  # the socket lives here; root and the server both reach it
        self.started = False

    def _cmd(self, *args: str) -> list[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._user is not None:
            cmd = ["runuser", "-u", self._user.pw_name, "--", *cmd]
        return cmd

    def start(self) -> PgServer:
        subprocess.run(self._cmd("initdb", "-D", str(self.data), "-U", self.USER, "--auth=trust",
                                 "-E", "UTF8", "--no-sync", "--no-instructions"),
                       check=True, capture_output=True)
        opts = {
            "listen_addresses": "''",  # Unix socket only: nothing on the network
            "unix_socket_directories": f"'{self.dir}'",
            "max_connections": "200",
            "shared_buffers": "64MB",
            **self.settings,
        }
        o = " ".join(f"-c {k}={v}" for k, v in opts.items())
        proc = subprocess.run(self._cmd("pg_ctl", "-D", str(self.data), "-l", str(self.logfile),
                                        "-o", o, "-w", "-t", "60", "start"),
                              capture_output=True, text=True)
        if proc.returncode != 0:
            log = self.logfile.read_text() if self.logfile.exists() else ""
            self.cleanup()
            raise RuntimeError(f"PostgreSQL did not start: {proc.stderr[-1000:]} {log[-2000:]}")
        self.started = True
        return self

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.USER}@/{dbname}?host={self.dir}"

    def create_database(self, name: str | None = None) -> str:
        """A fresh empty database; returns its URL."""
        import psycopg

        name = name or "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def pids(self) -> list[int]:
        """The postmaster and its children (for memory measurements)."""
        root = self.postmaster_pid()
        out = [root]
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                if ppid == root:
                    out.append(int(d.name))
        return out

    def stop(self) -> None:
        if self.started:
            # immediate: no shutdown checkpoint, since the directory is deleted next
            subprocess.run(self._cmd("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"),
                           capture_output=True)
            self.started = False
        self.cleanup()

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
