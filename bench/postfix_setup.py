"""A private Postfix instance and Postfix's smtp-sink for bench/compare.py (loopback only).

`ensure_installed()` installs postfix, libsasl2-modules and sasl2-bin from the distribution's
packages when `postconf` is missing (Debian/Ubuntu, as root), preseeding debconf with
"No configuration" and disabling the system service the package enables, so nothing keeps running
after the benchmark.

`PrivatePostfix` writes its own config_directory in a folder of ours (main.cf, master.cf, a Cyrus
SASL smtpd.conf and a sasldb), with its own queue_directory and data_directory, and runs it with
`postfix -c DIR start` / `stop`. It never touches /etc/postfix or the system instance. It listens
on 127.0.0.1:<port>, offers AUTH PLAIN/LOGIN without TLS (loopback), queues to disk as usual and
relays every message to `[127.0.0.1]:<upstream port>`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

SMTP_SINK = "/usr/sbin/smtp-sink"


def ensure_installed() -> str:
    """Install Postfix (and smtp-sink, which it ships) if missing; a line saying what was done."""
    if shutil.which("postconf") and Path(SMTP_SINK).exists() and shutil.which("saslpasswd2"):
        return "postfix already installed"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError("postfix is not installed and cannot be installed here (needs root and apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    preseed = ("postfix postfix/main_mailer_type select No configuration\n"
               "postfix postfix/mailname string bench.localdomain\n")
    subprocess.run(["debconf-set-selections"], input=preseed.encode(), check=True, env=env)
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", "postfix", "libsasl2-modules", "sasl2-bin"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    # The package enables the system service; the benchmark only ever runs its private instance.
    for cmd in (["systemctl", "disable", "postfix"], ["update-rc.d", "postfix", "disable"]):
        if shutil.which(cmd[0]):
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return "installed postfix, libsasl2-modules, sasl2-bin with apt-get (system service disabled)"


def version() -> str:
    out = subprocess.run(["postconf", "-d", "-h", "mail_version"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "?"


def start_sink(port: int) -> subprocess.Popen[bytes]:
    """Postfix's smtp-sink on 127.0.0.1:port: accepts everything (AUTH too), stores nothing."""
    cmd = [SMTP_SINK]
    if os.geteuid() == 0:
        cmd += ["-u", "postfix"]  # smtp-sink refuses to keep running as root
    return subprocess.Popen([*cmd, "-m", "1000", f"127.0.0.1:{port}", "1000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
{listen}  inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PrivatePostfix:
    """A Postfix instance of our own under `folder` (see the module docstring)."""

    def __init__(self, folder: Path, port: int, upstream_port: int, user: str = "bench",
                 password: str = "bench-password", concurrency: int = 100) -> None:
        self.folder, self.port, self.upstream_port = folder, port, upstream_port
        self.user, self.password, self.concurrency = user, password, concurrency
        self.conf = folder / "etc"
        self.started = False

    def _postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["postfix", "-c", str(self.conf), *args], capture_output=True, text=True,
                              check=False, timeout=60)
        if check and proc.returncode:
            raise RuntimeError(f"postfix {' '.join(args)} failed ({proc.returncode}): "
                               f"{(proc.stderr or proc.stdout).strip()[-800:]}")
        return proc

    def configure(self) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("a private Postfix instance needs root (its master runs as root)")
        owner = pwd.getpwnam("postfix")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o755)  # postfix processes must reach their queue below it
        for path in self.folder.parents:  # and every parent must be traversable
            if path == Path("/"):
                break
            if not os.stat(path).st_mode & 0o001:
                raise RuntimeError(f"{path} is not traversable by the postfix user")
        sasl = self.conf / "sasl"
        sasl.mkdir(parents=True, exist_ok=True)
        (self.folder / "queue").mkdir(exist_ok=True)
        data = self.folder / "data"
        data.mkdir(exist_ok=True)
        os.chown(data, owner.pw_uid, owner.pw_gid)
        sasldb = self.folder / "sasldb2"
        main_cf = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.folder / "queue"),
            "data_directory": str(data),
            "meta_directory": "/etc/postfix",  # postfix-files and dynamicmaps.cf of the package
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "postfix.bench.test",
            "mydomain": "bench.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "relay_domains": "",
            "relayhost": f"[127.0.0.1]:{self.upstream_port}",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtp_host_lookup": "native",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            "smtpd_sasl_auth_enable": "yes",
            "smtpd_sasl_type": "cyrus",
            "smtpd_sasl_path": "smtpd",
            "cyrus_sasl_config_path": str(sasl),
            "smtpd_sasl_local_domain": "bench",
            "smtpd_sasl_security_options": "noanonymous",
            "smtpd_relay_restrictions": "permit_sasl_authenticated, reject",
            "smtpd_recipient_restrictions": "",
            "message_size_limit": str(64 << 20),
            "mailbox_size_limit": "0",
            "default_destination_concurrency_limit": str(self.concurrency),
            "smtp_destination_concurrency_limit": str(self.concurrency),
            "default_process_limit": str(max(100, 2 * self.concurrency)),
            "smtputf8_enable": "no",
            "biff": "no",
            "maillog_file": str(self.folder / "maillog"),
            "maillog_file_prefixes": str(self.folder),
        }
        (self.conf / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in main_cf.items()))
        (self.conf / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{self.port}"))
        (sasl / "smtpd.conf").write_text(
            f"pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: {sasldb}\nmech_list: PLAIN LOGIN\n")
        subprocess.run(["saslpasswd2", "-p", "-c", "-f", str(sasldb), "-u", "bench", self.user],
                       input=self.password.encode(), check=True, timeout=30)
        os.chown(sasldb, owner.pw_uid, owner.pw_gid)
        sasldb.chmod(0o600)
        check = self._postfix("check", check=False)
        if check.returncode:
            raise RuntimeError(f"postfix check failed: {(check.stderr or check.stdout).strip()[-800:]}")

    def start(self) -> None:
        self._postfix("start")
        self.started = True

    def master_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.folder / "queue" / "pid" / "master.pid").read_text().split()[0])
        return None

    def pids(self) -> list[int]:
        """The master and every process it started (smtpd, cleanup, qmgr, smtp, ...)."""
        master = self.master_pid()
        if master is None:
            return []
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                ppid = int(stat[stat.rindex(")") + 2:].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
        found, todo = [], [master]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def queue_size(self) -> int:
        total = 0
        for sub in ("incoming", "active", "deferred", "maildrop"):
            total += sum(1 for p in (self.folder / "queue" / sub).rglob("*") if p.is_file())
        return total

    def wait_queue_empty(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (left := self.queue_size()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return left

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.folder / "maillog").read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        if not self.started:
            return
        master = self.master_pid()
        proc = self._postfix("stop", check=False)
        self.started = False
        deadline = time.monotonic() + 15
        while master and Path(f"/proc/{master}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if master and Path(f"/proc/{master}").exists():
            self._postfix("abort", check=False)
        if proc.returncode:
            raise RuntimeError(f"postfix stop: {(proc.stderr or proc.stdout).strip()}")
