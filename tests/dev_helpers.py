"""Run `relay dev` as a user would (a subprocess), read what it prints, send to it, stop it."""

from __future__ import annotations

import asyncio
import os
import signal
import smtplib
import ssl
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import IO

RELAY = str(Path(sys.executable).parent / "relay")


@dataclass
class Dev:
    """A running `relay dev` and the banner it printed."""

    proc: asyncio.subprocess.Process
    key: str
    log: IO[bytes]  # relay's stderr
    banner: list[str] = field(default_factory=list)

    def line(self, label: str) -> str:
        """The banner line that starts with label ('SMTP', 'HTTP', 'postgres'...), without the label."""
        for text in self.banner:
            if text.strip().startswith(label + " "):
                return text.strip()[len(label):].strip()
        raise AssertionError(f"no {label!r} line in the banner:\n" + "\n".join(self.banner))

    def address(self, label: str) -> tuple[str, int]:
        """(host, port) of a listener the banner names: 'SMTP', 'SMTPS' or 'HTTP'."""
        where = self.line(label).split()[0]
        where = where.split("://", 1)[-1].split("/", 1)[0]
        host, _, port = where.rpartition(":")
        return host.strip("[]"), int(port)

    def url(self) -> str:
        """The HTTP API's send URL as printed."""
        return self.line("HTTP").split()[0]


# listeners on free ports, so tests can run side by side (the default ports are one test's subject)
ANY_PORTS = {"RELAY_SMTP_LISTEN": "127.0.0.1:0", "RELAY_HTTP_LISTEN": "127.0.0.1:0",
             "RELAY_DASHBOARD_LISTEN": "127.0.0.1:0"}


def dev_env(**extra: str) -> dict[str, str]:
    """The test's environment without RELAY_* settings, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(extra)
    return env


async def start_dev(data_dir: Path | None, *, env: dict[str, str] | None = None, cwd: Path | None = None,
                    args: tuple[str, ...] = ()) -> Dev:
    """Start `relay dev` and return once it printed its banner (the line with Ctrl-C)."""
    argv = [RELAY, "dev", *args] + (["--data-dir", str(data_dir)] if data_dir is not None else [])
    folder = cwd or (data_dir.parent if data_dir is not None else None)
    assert folder is not None
    errors = tempfile.TemporaryFile()  # a file, not a pipe: the log never blocks relay  # noqa: SIM115
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env or dev_env(), cwd=str(folder), stdout=asyncio.subprocess.PIPE, stderr=errors,
    )
    dev = Dev(proc, "", errors)
    assert proc.stdout is not None
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 90)).decode()
        if not line:
            await proc.wait()
            errors.seek(0)
            output = errors.read().decode()
            errors.close()
            raise AssertionError(f"relay dev exited ({proc.returncode}) before its banner: {output}")
        dev.banner.append(line.rstrip("\n"))
        if line.strip().startswith("key "):
            dev.key = line.split()[1]
        if "Ctrl-C" in line:
            return dev


def message(subject: str = "hello from dev", body: str = "it works") -> EmailMessage:
    """A message from the demo sender."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "demo@example.com", "you@example.net", subject
    msg.set_content(body)
    return msg


def send_with_smtplib(key: str, host: str = "127.0.0.1", port: int = 2525, *, body: str = "it works",
                      starttls: ssl.SSLContext | None = None, implicit: ssl.SSLContext | None = None) -> None:
    """Log in with the key and send one message, as the README shows."""
    client: smtplib.SMTP
    if implicit is not None:
        client = smtplib.SMTP_SSL(host, port, timeout=10, context=implicit)
    else:
        client = smtplib.SMTP(host, port, timeout=10)
    with client:
        if starttls is not None:
            client.starttls(context=starttls)
        client.login("demo", key)
        client.send_message(message(body=body))


def postgres_running_on(folder: Path) -> bool:
    """Whether a postgres process names folder on its command line."""
    ps = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return any("postgres" in line and str(folder) in line for line in ps.splitlines())


def postgres_command_line(folder: Path) -> str:
    """The command line of the postgres server whose data folder is under folder."""
    ps = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return next(line for line in ps.splitlines() if " -D " in line and str(folder) in line)


async def stop(dev: Dev) -> int:
    """Ctrl-C, then the exit code."""
    dev.proc.send_signal(signal.SIGINT)
    try:
        return await asyncio.wait_for(dev.proc.wait(), 30)
    finally:
        dev.log.close()
