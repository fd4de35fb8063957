"""The embedded PostgreSQL used by `relay dev` and the tests: initdb, start as an unprivileged user, stop."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import pwd
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TypedDict
from urllib.parse import quote

from relay.errors import RelayError
from relay.pg_binaries import Binaries, BinariesError, find_binaries, mirrored

_PORT = 5432  # only names the socket file; the socket lives in a private folder
_SOCKET_NAME_ROOM = len("/.s.PGSQL.5432.lock")
_SUN_PATH_MAX = 107
_PR_SET_PDEATHSIG = 1
# PostgreSQL refuses to run as root; as root we run it as this uid ("nobody" on Debian, Ubuntu, Fedora,
# Alpine), so no `postgres` user has to exist. initdb needs the uid to have a passwd entry.
SERVER_UID = 65534
# As root, a cluster whose data folder that uid cannot reach (inside /root, mode 0700) lives here,
# and so do links to binaries it cannot reach (a wheel in a venv under /root).
REACHABLE_ROOT = Path("/var/lib/relay-dev")


class _Identity(TypedDict, total=False):
    """subprocess keyword arguments that switch the child to another account."""

    user: int
    group: int
    extra_groups: list[int]


class EmbeddedError(RelayError):
    """The embedded PostgreSQL could not be set up or started; one line says why."""


def _server_account() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as when we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwuid(SERVER_UID)
    except KeyError:
        raise EmbeddedError(
            f"running as root: PostgreSQL refuses root, so relay runs it as uid {SERVER_UID}, but that uid "
            "has no passwd entry (initdb needs one); add one, e.g. 'nobody:x:65534:65534::/:/usr/sbin/nologin' "
            "to /etc/passwd, or run relay as a normal user"
        ) from None


def _die_with_parent() -> None:
    """In the child: ask the kernel for SIGINT (fast shutdown) when our parent dies, even by kill -9."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT)


def _short_name(folder: Path) -> str:
    """A short, stable, readable folder name for a data folder: its last parts and a hash of its path."""
    tail = "-".join(folder.parts[-3:])
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", tail).strip("-.")[:32] or "data"
    return f"{readable}-{hashlib.sha256(str(folder).encode()).hexdigest()[:10]}"


class EmbeddedPostgres:
    """One PostgreSQL cluster in a data folder, served on a unix socket in a private folder.

    As root, the server runs as uid SERVER_UID; when that uid cannot reach the data folder, the
    cluster and its socket live under REACHABLE_ROOT instead (`pgdata` says where, once started).
    """

    def __init__(self, data_dir: str | os.PathLike[str], *, durable: bool = True) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.durable = durable
        self.account = _server_account()
        try:
            self.binaries: Binaries = find_binaries()
        except BinariesError as exc:
            raise EmbeddedError(str(exc)) from None
        self.log_path = self.data_dir / "postgres.log"  # opened by us, handed to the server as a file
        self._place(self.data_dir)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bin_dir(self) -> Path:
        """The folder of the initdb and postgres this cluster runs."""
        return self.binaries.bin_dir

    def _place(self, home: Path) -> None:
        self.pgdata = home / "pg"
        preferred = home / "pg-run"
        if len(str(preferred)) + _SOCKET_NAME_ROOM <= _SUN_PATH_MAX:
            self.socket_dir = preferred
        else:  # unix socket paths are short: fall back to a private folder under /tmp
            self.socket_dir = Path(tempfile.mkdtemp(prefix="relay-pg-"))

    def _as_server(self) -> _Identity:
        """subprocess arguments that run a command as the server's account."""
        if self.account is None:
            return {}
        return {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        if self.account is not None:
            env.update(HOME="/", USER=self.account.pw_name)
        return env

    def _server_can(self, test_flag: str, path: Path) -> bool:
        """Whether the server's account passes `test <flag> path` (asked as that account, so every
        folder on the way counts, ACLs included)."""
        probe = subprocess.run(
            ["test", test_flag, str(path)], cwd="/", env=self._env(), check=False,
            **self._as_server(),
        )
        return probe.returncode == 0

    def _own(self, path: Path) -> None:
        """Give path (and, for a cluster made by another account, all it holds) to the server account."""
        if self.account is None:
            return
        uid, gid = self.account.pw_uid, self.account.pw_gid
        if path.stat().st_uid != uid and path == self.pgdata:
            # a cluster initialized by another account (the `postgres` user of older relays)
            for folder, dirs, files in os.walk(path):
                for name in dirs + files:
                    os.lchown(os.path.join(folder, name), uid, gid)
        os.chown(path, uid, gid)

    def _prepare_folders(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.account is not None:
            if self._server_can("-x", self.data_dir.parent):
                # the server account must be able to pass through our folder (not list or read it)
                self.data_dir.chmod(self.data_dir.stat().st_mode | 0o001)
            else:
                self._relocate()
            if not self._server_can("-x", self.bin_dir / "postgres"):
                self.binaries = mirrored(self.binaries, REACHABLE_ROOT)
        for folder in (self.pgdata, self.socket_dir):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._own(folder)
            folder.chmod(0o700)

    def _relocate(self) -> None:
        """Move the cluster to a folder under REACHABLE_ROOT that the server account can reach."""
        assert self.account is not None
        REACHABLE_ROOT.mkdir(mode=0o711, parents=True, exist_ok=True)
        home = REACHABLE_ROOT / _short_name(self.data_dir)
        home.mkdir(mode=0o700, exist_ok=True)
        os.chown(home, self.account.pw_uid, self.account.pw_gid)
        if not self._server_can("-w", home):
            raise EmbeddedError(
                f"PostgreSQL runs as uid {self.account.pw_uid} (relay runs as root), and that uid can reach "
                f"neither {self.data_dir} nor {home}; set server.data_dir to a folder it can reach"
            )
        if self.socket_dir.parent != self.data_dir:  # the /tmp folder _place made for a long path
            with contextlib.suppress(OSError):
                self.socket_dir.rmdir()
        self._place(home)

    def describe(self) -> str:
        """One line for people: which PostgreSQL, from where, as whom, with its cluster where."""
        who = "" if self.account is None else f" as uid {self.account.pw_uid} ({self.account.pw_name})"
        return f"{self.binaries.version()} from {self.binaries.origin}{who}, cluster in {self.pgdata}"

    def initialized(self) -> bool:
        """True when the data folder already holds a cluster."""
        return (self.pgdata / "PG_VERSION").exists()

    def _initdb(self) -> None:
        result = subprocess.run(
            [str(self.bin_dir / "initdb"), "-D", str(self.pgdata), "-U", "relay", "--auth=trust",
             "-E", "UTF8", "--locale=C"] + ([] if self.durable else ["--no-sync"]),
            cwd="/", env=self._env(), capture_output=True, check=False,
            **self._as_server(),
        )
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).decode(errors="replace").strip().splitlines()
            raise EmbeddedError(f"initdb failed: {tail[-1] if tail else result.returncode}")

    def _check_major(self) -> None:
        """A cluster runs only on the major version that made it: say so, rather than a log to read."""
        made_by = (self.pgdata / "PG_VERSION").read_text().strip()
        running = self.binaries.version().removeprefix("PostgreSQL ").split(".")[0]
        if running.isdigit() and made_by != running:
            raise EmbeddedError(
                f"the cluster in {self.pgdata} was made by PostgreSQL {made_by}, but the binaries are "
                f"{self.binaries.version()} from {self.binaries.origin}: pick PostgreSQL {made_by}'s "
                "(RELAY_PG_BINARIES) or start from a new data folder"
            )

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
        self._check_major()
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
                **self._as_server(),
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
