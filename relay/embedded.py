"""The embedded PostgreSQL used by `relay dev` and the tests: initdb, start as an unprivileged user, stop."""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from relay.errors import RelayError

INSTALL_HINT = (
    "no PostgreSQL server binaries found (initdb, postgres): install them, e.g. "
    "`apt-get install postgresql` (Debian/Ubuntu), `dnf install postgresql-server` (Fedora) "
    "or `brew install postgresql` (macOS), or set database.url to an existing server"
)
_PORT = 5432  # only names the socket file; the socket lives in a private folder
_SOCKET_NAME_ROOM = len("/.s.PGSQL.5432.lock")
_SUN_PATH_MAX = 107
_PR_SET_PDEATHSIG = 1


class EmbeddedError(RelayError):
    """The embedded PostgreSQL could not be set up or started; one line says why."""


def find_bin_dir() -> Path:
    """The folder holding initdb and postgres: PATH first, then Debian's versioned folders."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("postgres"):
        return Path(on_path).resolve().parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin") + glob.glob("/usr/pgsql-*/bin")
        + glob.glob("/opt/homebrew/opt/postgresql*/bin") + glob.glob("/usr/local/opt/postgresql*/bin"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in p.replace("-", "/").split("/")],
    )
    for folder in reversed(candidates):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "postgres").exists():
            return Path(folder)
    raise EmbeddedError(INSTALL_HINT)


def _server_account() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as when we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise EmbeddedError("running as root, but neither a 'postgres' nor a 'nobody' user exists")


def _die_with_parent() -> None:
    """In the child: ask the kernel for SIGINT (fast shutdown) when our parent dies, even by kill -9."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT)


class EmbeddedPostgres:
    """One PostgreSQL cluster in a data folder, served on a unix socket in a private folder."""

    def __init__(self, data_dir: str | os.PathLike[str], *, durable: bool = True) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.pgdata = self.data_dir / "pg"
        self.durable = durable
        self.account = _server_account()
        self.bin_dir = find_bin_dir()
        self.log_path = self.data_dir / "postgres.log"
        self.socket_dir = self._choose_socket_dir()
        self.process: subprocess.Popen[bytes] | None = None

    def _choose_socket_dir(self) -> Path:
        preferred = self.data_dir / "pg-run"
        if len(str(preferred)) + _SOCKET_NAME_ROOM <= _SUN_PATH_MAX:
            return preferred
        # unix socket paths are short: fall back to a private folder under /tmp
        return Path(tempfile.mkdtemp(prefix="relay-pg-"))

    def _as_server(self) -> dict[str, object]:
        """subprocess arguments that run a command as the server's account."""
        if self.account is None:
            return {}
        return {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        if self.account is not None:
            env.update(HOME=self.account.pw_dir or "/", USER=self.account.pw_name)
        return env

    def _own(self, path: Path) -> None:
        if self.account is not None:
            os.chown(path, self.account.pw_uid, self.account.pw_gid)

    def _prepare_folders(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.account is not None:
            # the server user must be able to pass through our folder (not list or read it)
            mode = self.data_dir.stat().st_mode
            self.data_dir.chmod(mode | 0o001)
        for folder in (self.pgdata, self.socket_dir):
            folder.mkdir(mode=0o700, exist_ok=True)
            self._own(folder)
            folder.chmod(0o700)
        if self.account is not None:
            probe = subprocess.run(
                ["test", "-w", str(self.pgdata)], cwd="/", env=self._env(), check=False,
                **self._as_server(),  # type: ignore[arg-type]
            )
            if probe.returncode != 0:
                raise EmbeddedError(
                    f"PostgreSQL runs as user {self.account.pw_name!r} (relay runs as root), and that "
                    f"user cannot reach {self.pgdata}; set server.data_dir to a folder it can reach"
                )

    def initialized(self) -> bool:
        """True when the data folder already holds a cluster."""
        return (self.pgdata / "PG_VERSION").exists()

    def _initdb(self) -> None:
        result = subprocess.run(
            [str(self.bin_dir / "initdb"), "-D", str(self.pgdata), "-U", "relay", "--auth=trust",
             "-E", "UTF8", "--locale=C"] + ([] if self.durable else ["--no-sync"]),
            cwd="/", env=self._env(), capture_output=True, check=False,
            **self._as_server(),  # type: ignore[arg-type]
        )
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).decode(errors="replace").strip().splitlines()
            raise EmbeddedError(f"initdb failed: {tail[-1] if tail else result.returncode}")

    def _running_socket_dir(self) -> Path | None:
        """The socket folder of a server already running on this data folder (another relay's)."""
        pid_file = self.pgdata / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
            os.kill(int(lines[0]), 0)
            return Path(lines[4])
        except (OSError, ValueError, IndexError):
            return None

    def start(self, timeout: float = 60.0) -> None:
        """Create the cluster if needed and start the server; return once it accepts connections."""
        self._prepare_folders()
        if not self.initialized():
            self._initdb()
        running = self._running_socket_dir()
        if running is not None:
            # another relay process (say `relay dev`) owns it: use it, leave it running
            self.socket_dir = running
            return
        settings = {
            "listen_addresses": "",
            "unix_socket_directories": str(self.socket_dir),
            "port": str(_PORT),
            "max_connections": "200",
            "shared_buffers": "128MB",
        }
        if not self.durable:
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        args = [str(self.bin_dir / "postgres"), "-D", str(self.pgdata)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            self.process = subprocess.Popen(
                args, cwd="/", env=self._env(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True,  # Ctrl-C reaches relay, which then stops us in order
                preexec_fn=_die_with_parent,  # PDEATHSIG: no orphaned server after kill -9
                **self._as_server(),  # type: ignore[arg-type]
            )
        finally:
            log.close()
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        isready = self.bin_dir / "pg_isready"
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedError(f"PostgreSQL exited at start-up; see {self.log_path}")
            if isready.exists():
                ok = subprocess.run(
                    [str(isready), "-q", "-h", str(self.socket_dir), "-p", str(_PORT), "-U", "relay",
                     "-d", "postgres"], env=self._env(), check=False,
                ).returncode == 0
            else:
                ok = (self.socket_dir / f".s.PGSQL.{_PORT}").exists()
            if ok:
                return
            time.sleep(0.05)
        self.stop()
        raise EmbeddedError(f"PostgreSQL did not become ready in {timeout:.0f}s; see {self.log_path}")

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown; escalate to SIGKILL if it does not stop in time."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def dsn(self, dbname: str = "relay") -> str:
        """A libpq/asyncpg URL that reaches this server over its socket."""
        return f"postgresql://relay@/{dbname}?host={quote(str(self.socket_dir))}&port={_PORT}"

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
