"""relay beside Postfix, a bare aiosmtpd server and Postfix's smtp-sink, in one run (issue #6).

Sets up what it needs: Postfix, libsasl2-modules and sasl2-bin from the distribution's packages when
`postconf` is missing (apt-get, as root; the system service the package enables is disabled again),
a private Postfix instance in a temporary folder (its own config, queue and SASL database; SASL AUTH
PLAIN/LOGIN via Cyrus sasldb, queueing to disk, relaying everything to smtp-sink), Postfix's
smtp-sink as the upstream of both Postfix and relay, an embedded PostgreSQL with a bench account
whose rate limit, daily cap and credits do not interfere, `relay serve` (its per-connection command
limit raised so that it does not interfere either), and a bare aiosmtpd 1.4.6
server (bench/smtp_bench.py's). Then it runs the matrix, alternating targets within each round:

  * 2 KB messages, N concurrent authenticated clients (bench/rawclient.py's lean client in
    --generators processes of their own, or aiosmtplib in this process with --generator
    aiosmtplib), a new connection per message and connection reuse, for --seconds or --messages:
    Postfix, bare aiosmtpd, smtp-sink, relay;
  * 20 concurrent 9.5 MiB messages, one reused connection per client, with a raw SMTP client
    (bench/rawclient.py): Postfix, bare aiosmtpd, relay.

It prints a line per run with the CPU per message of every process (the generator, the server:
for Postfix all its processes, measured again once its queue is empty, the sink, relay's
PostgreSQL, this script), then a table (means of the rounds: msgs/s, p50/p99 latency, the server's
peak RSS, ratio to Postfix, CPU per message), issues 17's and 6's targets with PASS/FAIL, and what
PostgreSQL wrote per relay message (bench/pgstats.py). docs/performance.md explains the figures.
Everything stops at the end, the private Postfix included. Only 127.0.0.1 is used.

    sudo /tmp/venv/bin/python bench/compare.py [--rounds 2] [--seconds 10] [--skip-large]

Needs root for Postfix (installing it, and its master process); without Postfix the other targets
still run and the output says why Postfix is missing. If the script is killed with SIGKILL, stop
the private instance by hand: `postfix -c /tmp/relay-compare-*/postfix/etc stop`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pgstats
import postfix_setup
import rawclient
import smtp_bench

MIB = 1 << 20
LARGE_SIZE = int(9.5 * MIB)
POSTFIX, BARE, SINK, RELAY = "Postfix (SASL)", "bare aiosmtpd", "smtp-sink", "relay serve"
MODES = ("new connection", "reuse")
TARGET_NAMES = {POSTFIX: "postfix", BARE: "bare", SINK: "sink", RELAY: "relay"}


# -- the machine, memory ---------------------------------------------------------------------------


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), "?")
    meminfo = {line.split(":")[0]: line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()}
    nproc = len(os.sched_getaffinity(0))
    return (f"machine: nproc {nproc} (os.cpu_count {os.cpu_count()}), CPU {model}, "
            f"memory {int(meminfo['MemTotal']) / MIB:.1f} GiB total, "
            f"{int(meminfo['MemAvailable']) / MIB:.1f} GiB available; "
            f"kernel {os.uname().release}; Python {sys.version.split()[0]}; {load_average()}")


def _status_kb(pid: int, field_name: str) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name):
                return int(line.split()[1])
    return 0


def _pss_kb(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def load_average() -> str:
    return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3])


def reset_peak(pids: list[int]) -> None:
    """Reset VmHWM (the peak RSS) of these processes (writing 5 to clear_refs; root or owner)."""
    for pid in pids:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")


class RssSampler(threading.Thread):
    """Samples the sum of VmRSS over `pids()` every `interval` seconds; `peak_mb` is the largest sum."""

    def __init__(self, pids: Callable[[], list[int]], interval: float = 0.1, pss: bool = False) -> None:
        super().__init__(daemon=True)
        self.pids, self.interval, self.pss = pids, interval, pss
        self.peak_kb = self.peak_pss_kb = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        ticks = 0
        pids: list[int] = []
        while not self.stopping.is_set():
            if ticks % 10 == 0:  # finding Postfix's processes walks all of /proc: once a second
                pids = self.pids()
            self.peak_kb = max(self.peak_kb, sum(_status_kb(pid, "VmRSS:") for pid in pids))
            # proportional set size: shared pages divided among the processes sharing them; once a
            # second only, as reading smaps_rollup of Postfix's dozens of processes costs CPU
            if self.pss and ticks % 10 == 0:
                self.peak_pss_kb = max(self.peak_pss_kb, sum(_pss_kb(pid) for pid in pids))
            ticks += 1
            self.stopping.wait(self.interval)

    @property
    def peak_mb(self) -> float:
        return self.peak_kb / 1024

    def __enter__(self) -> RssSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.join()


def box_busy_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot, from /proc/stat."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return sum(ticks) - idle, sum(ticks)


class CpuMeter:
    """CPU used during a run by named process trees (a reaped child's time counts to its parent), by
    this process (the aiosmtplib load generator runs here), and by the whole machine."""

    def __init__(self, roots: dict[str, Callable[[], list[int]]]) -> None:
        self.roots = roots

    def snapshot(self) -> tuple[dict[str, float], tuple[int, int]]:
        used = {"generator": smtp_bench.cpu_seconds()}
        for name, root in self.roots.items():
            used[name] = sum(smtp_bench.tree_cpu_seconds(pid) for pid in root())
        return used, box_busy_ticks()

    @staticmethod
    def per_message(before: tuple[dict[str, float], tuple[int, int]],
                    after: tuple[dict[str, float], tuple[int, int]], messages: int) -> dict[str, float]:
        """ms of CPU per message of each process tree between two snapshots, and 'busy' (0-1)."""
        per = {name: (after[0][name] - before[0][name]) / messages * 1000 if messages else float("nan")
               for name in after[0]}
        busy, total = (a - b for a, b in zip(after[1], before[1], strict=True))
        per["busy"] = busy / total if total else 0.0
        return per

    @staticmethod
    def text(per: dict[str, float]) -> str:
        """'CPU ms/msg: server 1.10, ...; machine 97% busy'."""
        return ("CPU ms/msg: " + ", ".join(f"{name} {ms:.2f}" for name, ms in per.items() if name != "busy")
                + f"; machine {per['busy']:.0%} busy")


CPU = CpuMeter({})  # main() names the server, PostgreSQL and sink roots


# -- targets and runs ---------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    port: int
    pids: Callable[[], list[int]]  # the server's processes, for memory
    user: str
    password: str
    auth_250: bool = False  # smtp-sink answers AUTH with 250 rather than 235
    postfix: postfix_setup.PrivatePostfix | None = None
    more_ports: list[int] = field(default_factory=list)  # further relay serve processes (--relay-processes)


@dataclass
class Run:
    rate: float
    p50: float
    p99: float
    failures: int
    rss_mb: float
    sent: int = 0
    notes: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # ms per message during the run, by process tree
    cpu_all: dict[str, float] = field(default_factory=dict)  # the same until Postfix's queue was drained
    delivered: float = 0.0  # Postfix: messages / (the run + the time its queue took to drain)

    def server_ms(self, drained: bool = True) -> float:
        """CPU per message of the server: relay + its PostgreSQL; Postfix's processes until its
        queue was drained (its delivery work included) when `drained`."""
        cpu = self.cpu_all if drained and self.cpu_all else self.cpu
        return cpu.get("server", 0.0) + cpu.get("PostgreSQL", 0.0)


@contextlib.contextmanager
def accept_250_after_auth(enabled: bool) -> Iterator[None]:
    """smtp-sink answers a successful AUTH with `250 2.0.0 Ok` (not 235), which aiosmtplib refuses:
    for that target only, let aiosmtplib's AUTH PLAIN accept 250 too. Same bytes on the wire."""
    if not enabled:
        yield
        return
    import aiosmtplib
    from aiosmtplib.auth import auth_plain_encode

    original = aiosmtplib.SMTP.auth_plain

    async def auth_plain(self: aiosmtplib.SMTP, username: str, password: str, /, *,
                         timeout: object = None) -> aiosmtplib.SMTPResponse:
        response = await self.execute_command(b"AUTH", b"PLAIN", auth_plain_encode(username, password),
                                              timeout=timeout)  # type: ignore[arg-type]
        if response.code not in (235, 250):
            raise aiosmtplib.SMTPAuthenticationError(response.code, response.message)
        return response

    aiosmtplib.SMTP.auth_plain = auth_plain  # type: ignore[assignment,method-assign]
    try:
        yield
    finally:
        aiosmtplib.SMTP.auth_plain = original  # type: ignore[method-assign]


Work = Callable[[], tuple[int, int, list[float], float, float | None]]


def measure(target: Target, work: Work, postgres: bool) -> Run:
    """Run `work` against `target`, with its peak memory (for one process its VmHWM, reset before the
    run; for Postfix the largest sampled sum of VmRSS over all its processes) and the CPU per message
    of every process. `work` returns (sent, failures, latencies, wall seconds, the generator's CPU
    seconds, or None when it ran in this process). For Postfix, the CPU is measured a second time
    once its queue is empty: its deliveries to the sink after the run are part of a message's cost.
    PostgreSQL's CPU is counted for relay only (`postgres`), although it is measured in every run."""
    pids = target.pids()
    reset_peak(pids)
    CPU.roots["server"] = lambda: ([target.postfix.master_pid() or 0] if target.postfix else target.pids())
    with RssSampler(target.pids, pss=target.postfix is not None) as sampler:
        cpu_before = CPU.snapshot()
        sent, failures, latencies, wall, generator_cpu = work()
        cpu_after = CPU.snapshot()
    if target.postfix is None:
        rss = max(sampler.peak_mb, max((_status_kb(pid, "VmHWM:") for pid in target.pids()), default=0) / 1024)
    else:
        rss = sampler.peak_mb
    latencies.sort()
    p50, p99 = smtp_bench.percentile(latencies, 50), smtp_bench.percentile(latencies, 99)
    per = CpuMeter.per_message(cpu_before, cpu_after, sent)
    if generator_cpu is not None:  # the generator ran in child processes; this one only sampled memory
        per["bench"] = per["generator"]
        per["generator"] = generator_cpu / sent * 1000 if sent else float("nan")
    if not postgres:
        per.pop("PostgreSQL", None)
    run = Run(sent / wall if wall else 0.0, p50, p99, failures, rss, sent, [CpuMeter.text(per)], cpu=per)
    if target.postfix is not None:
        smtpd_hwm = sum(_status_kb(pid, "VmHWM:") for pid in target.pids() if _comm(pid) == "smtpd") / 1024
        began = time.monotonic()
        left = target.postfix.wait_queue_empty(300)
        drained = time.monotonic() - began
        run.cpu_all = CpuMeter.per_message(cpu_before, CPU.snapshot(), sent)
        run.cpu_all.pop("PostgreSQL", None)
        run.cpu_all["generator"] = per["generator"]
        run.delivered = sent / (wall + drained) if wall + drained else 0.0
        run.notes.append(f"PSS sum {sampler.peak_pss_kb / 1024:.0f} MB, smtpd VmHWM sum {smtpd_hwm:.0f} MB; "
                         f"queue drained {drained:.1f} s after the run"
                         + (f" ({left} files still queued)" if left else "")
                         + f"; until drained: server {run.cpu_all['server']:.2f}, sink {run.cpu_all['sink']:.2f} "
                         f"ms/msg; delivered {sent / (wall + drained):.0f} msgs/s")
    return run


def _comm(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip()
    return ""


def small_run(target: Target, reuse: bool, args: argparse.Namespace, sender: str, payload_file: Path) -> Run:
    def with_aiosmtplib() -> tuple[int, int, list[float], float, float | None]:
        began = time.perf_counter()
        with accept_250_after_auth(target.auth_250):
            try:
                sent, failed, lat = asyncio.run(asyncio.wait_for(
                    smtp_bench.load(target.port, target.password, sender, args.clients, args.seconds, reuse,
                                    args.size),
                    args.seconds + 120))
            except TimeoutError:
                return 0, 1, [], time.perf_counter() - began, None
        return sent, failed, lat, time.perf_counter() - began, None

    def with_raw() -> tuple[int, int, list[float], float, float | None]:
        return generate(target, reuse, args, sender, payload_file)

    return measure(target, with_raw if args.generator == "raw" else with_aiosmtplib, target.name == RELAY)


def generate(target: Target, reuse: bool, args: argparse.Namespace, sender: str,
             payload_file: Path) -> tuple[int, int, list[float], float, float | None]:
    """`args.generators` processes of bench/rawclient.py sharing the clients (and the message count),
    started together; their results summed, wall time the longest of them."""
    n = max(1, min(max(args.generators, 1 + len(target.more_ports)), args.clients))
    start_at = time.time() + 1.5  # after every process has imported what it needs
    procs = []
    outs = [payload_file.with_name(f"generator-{i}.json") for i in range(n)]
    for i in range(n):
        ports = [target.port, *target.more_ports]
        port = ports[i % len(ports)]
        cmd = [sys.executable, str(Path(rawclient.__file__)), "--port", str(port), "--user", target.user,
               "--password", target.password, "--sender", sender, "--payload", str(payload_file),
               "--clients", str(args.clients // n + (i < args.clients % n)), "--seconds", str(args.seconds),
               "--messages", str(args.messages // n + (i < args.messages % n) if args.messages else 0),
               "--start-at", str(start_at), "--out", str(outs[i])]
        procs.append(subprocess.Popen(cmd + ["--reuse"] * reuse + ["--auth-250"] * target.auth_250
                                      + ["--pipelining"] * args.pipelining))
    sent = failures = 0
    latencies: list[float] = []
    wall = cpu = 0.0
    for proc, out in zip(procs, outs, strict=True):
        if proc.wait(timeout=args.seconds + 300) or not out.exists():
            failures += 1
            continue
        got = json.loads(out.read_text())
        out.unlink()
        sent, failures = sent + got["sent"], failures + got["failures"]
        latencies += got["latencies"]
        wall, cpu = max(wall, got["wall"]), cpu + got["cpu"]
    return sent, failures, latencies, wall, cpu


def large_run(target: Target, args: argparse.Namespace, sender: str, payload: bytes) -> Run:
    def work() -> tuple[int, int, list[float], float]:
        import uvloop

        began = time.perf_counter()
        try:
            return uvloop.run(asyncio.wait_for(
                rawclient.load(target.port, target.user, target.password, sender, payload, args.large_clients,
                               args.large_seconds),
                args.large_seconds + 300))
        except TimeoutError:
            return 0, 1, [], time.perf_counter() - began

    def with_cpu() -> tuple[int, int, list[float], float, float | None]:
        sent, failed, lat, wall = work()
        return sent, failed, lat, wall, None

    return measure(target, with_cpu, target.name == RELAY)


# -- Postfix ---------------------------------------------------------------------------------------------


def start_postfix(folder: Path, sink_port: int, concurrency: int) -> postfix_setup.PrivatePostfix:
    """Configure and start the private instance, then check it end to end: one message over AUTH
    PLAIN must be accepted, relayed to smtp-sink and leave the queue."""
    instance = postfix_setup.PrivatePostfix(folder / "postfix", smtp_bench.free_port(), sink_port,
                                            concurrency=concurrency)
    instance.configure()
    instance.start()
    try:
        smtp_bench.wait_port(instance.port, 30)
        with smtplib.SMTP("127.0.0.1", instance.port, timeout=30) as smtp:
            smtp.login(instance.user, instance.password)
            smtp.sendmail("bench@example.com", ["rcpt@dest.test"], b"Subject: smoke test\r\n\r\nhello\r\n")
        if instance.wait_queue_empty(30):
            raise RuntimeError("the smoke-test message did not leave Postfix's queue within 30 s:\n"
                               + instance.log_tail())
    except Exception:
        instance.stop()
        raise
    return instance


def postfix_log_counts(instance: postfix_setup.PrivatePostfix) -> str:
    with contextlib.suppress(OSError):
        log = (instance.folder / "maillog").read_text(errors="replace")
        counts = {s: log.count(f"status={s}") for s in ("sent", "deferred", "bounced")}
        return ", ".join(f"{k} {v}" for k, v in counts.items())
    return "no log"


# -- main ---------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="Run as root: sudo /tmp/venv/bin/python bench/compare.py",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="rounds, targets alternating within each (2)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per small-message run (10)")
    parser.add_argument("--clients", type=int, default=10, help="concurrent clients, small messages (10)")
    parser.add_argument("--size", type=int, default=2048, help="small message size in bytes (2048)")
    parser.add_argument("--messages", type=int, default=0,
                        help="small messages per run: a fixed count instead of --seconds (0: by time)")
    parser.add_argument("--generator", choices=["raw", "aiosmtplib"], default="raw",
                        help="small-message load generator: bench/rawclient.py processes (default), or "
                             "aiosmtplib in this process (the old generator: it costs about as much CPU "
                             "per message as the server it measures)")
    parser.add_argument("--generators", type=int, default=2, help="generator processes for --generator raw (2)")
    parser.add_argument("--pipelining", action="store_true",
                        help="the raw generator pipelines MAIL, RCPT, DATA (and QUIT after the dot), RFC 2920")
    parser.add_argument("--relay-processes", type=int, default=1,
                        help="relay serve processes on one database, each on its own port (1)")
    parser.add_argument("--targets", default="postfix,bare,sink,relay",
                        help="comma-separated subset of postfix,bare,sink,relay (all)")
    parser.add_argument("--relay-sql", help="SQL file run on relay's database before the runs (A/B experiments)")
    parser.add_argument("--skip-large", action="store_true", help="skip the 9.5 MiB part")
    parser.add_argument("--large-clients", type=int, default=20, help="concurrent 9.5 MiB messages (20)")
    parser.add_argument("--large-seconds", type=float, default=20.0,
                        help="seconds per 9.5 MiB run; messages started before the end are finished (20)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the cleanup below runs

    print(machine(), flush=True)
    folder = Path(tempfile.mkdtemp(prefix="relay-compare-"))
    folder.chmod(0o711)  # the postfix and postgres users must reach their folders below it
    procs: list[subprocess.Popen[bytes]] = []
    pg = None
    postfix: postfix_setup.PrivatePostfix | None = None
    postfix_error = ""
    try:
        # Postfix and smtp-sink
        try:
            print(f"setup: {postfix_setup.ensure_installed()}", flush=True)
        except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
            postfix_error = f"Postfix could not be installed: {exc}"
        sink_port = smtp_bench.free_port()
        if Path(postfix_setup.SMTP_SINK).exists():
            sink = postfix_setup.start_sink(sink_port)
            sink_name = "smtp-sink"
        else:  # without Postfix's smtp-sink relay still needs an upstream: bench/smtp_bench.py's sink
            sink = subprocess.Popen([sys.executable, str(smtp_bench.HERE), "--child", "sink", "--port",
                                     str(sink_port)])
            sink_name = "Python sink (smtp-sink missing)"
        procs.append(sink)
        CPU.roots.update(server=lambda: [], sink=lambda: [sink.pid])
        smtp_bench.wait_port(sink_port)
        if "postfix" not in args.targets.split(","):
            postfix_error = "Postfix not among --targets"
        if not postfix_error:
            try:
                postfix = start_postfix(folder, sink_port, max(args.clients, args.large_clients) * 2)
                print(f"setup: private Postfix {postfix_setup.version()} on 127.0.0.1:{postfix.port} "
                      f"(config {postfix.conf}), relayhost [127.0.0.1]:{sink_port} ({sink_name})", flush=True)
            except (RuntimeError, subprocess.SubprocessError, OSError, smtplib.SMTPException) as exc:
                postfix_error = f"Postfix could not be started: {exc}"
        if postfix_error:
            print(f"setup: {postfix_error}; running the other targets", flush=True)

        # bare aiosmtpd
        bare_port = smtp_bench.free_port()
        bare = subprocess.Popen([sys.executable, str(smtp_bench.HERE), "--child", "bare", "--port", str(bare_port)])
        procs.append(bare)

        # relay: embedded PostgreSQL, a bench account, relay serve relaying to smtp-sink
        import asyncpg

        from relay.embedded import EmbeddedPostgres

        pg = EmbeddedPostgres(folder / "pg")  # durable: a real commit per message
        pg.start()
        CPU.roots["PostgreSQL"] = lambda: [pg.process.pid] if pg is not None and pg.process is not None else []

        async def create_db() -> None:
            conn = await asyncpg.connect(pg.dsn("postgres"))
            await conn.execute("CREATE DATABASE relay")
            await conn.close()

        asyncio.run(create_db())
        dsn = pg.dsn("relay")
        key, sender = asyncio.run(smtp_bench.prepare_database(dsn))
        if args.relay_sql:  # an experiment on the schema (an index dropped...), for A/B runs
            async def run_sql() -> None:
                conn = await asyncpg.connect(dsn)
                await conn.execute(Path(args.relay_sql).read_text())
                await conn.close()

            asyncio.run(run_sql())
            print(f"setup: ran {args.relay_sql} on relay's database", flush=True)
        async def track_functions() -> None:  # for pgstats: time inside relay's PL/pgSQL functions
            conn = await asyncpg.connect(dsn)
            await conn.execute("ALTER DATABASE relay SET track_functions = 'pl'")
            await conn.close()

        asyncio.run(track_functions())
        pg_before = asyncio.run(pgstats.snapshot(dsn))
        relay_ports = [smtp_bench.free_port() for _ in range(args.relay_processes)]
        relay_procs = []
        pool = max(args.clients, args.large_clients) // args.relay_processes + 1
        relay_log = (folder / "relay.log").open("wb")
        for relay_port in relay_ports:  # several: each its own port, the generators spread over them
            env = dict(os.environ, RELAY_DATABASE_URL=dsn, RELAY_SERVER_KEY_SECRET=smtp_bench.KEY_SECRET,
                       RELAY_SMTP_LISTEN=f"127.0.0.1:{relay_port}", RELAY_SMTP_ALLOW_PLAINTEXT_AUTH="true",
                       # like the bench key's rate limit: must not interfere (1000 MAIL per connection)
                       RELAY_SMTP_MAX_COMMANDS="10000000",
                       RELAY_SMTP_HOSTNAME="relay.bench", RELAY_HTTP_LISTEN=f"127.0.0.1:{smtp_bench.free_port()}",
                       RELAY_UPSTREAM_URL=f"smtp://127.0.0.1:{sink_port}", RELAY_UPSTREAM_POOL_SIZE=str(pool),
                       RELAY_DATABASE_POOL_SIZE=str(pool + 2), RELAY_SERVER_DATA_DIR=str(folder))
            relay_procs.append(subprocess.Popen([str(Path(sys.executable).parent / "relay"), "serve"], env=env,
                                                stdout=relay_log, stderr=subprocess.STDOUT))
        procs.extend(relay_procs)
        relay_port = relay_ports[0]
        for port in (bare_port, *relay_ports):
            try:
                smtp_bench.wait_port(port)
            except RuntimeError:
                print((folder / "relay.log").read_text(errors="replace")[-2000:])
                raise
        print(f"setup: relay serve on 127.0.0.1:{','.join(map(str, relay_ports))} "
              f"(upstream smtp://127.0.0.1:{sink_port}, pools {pool}), "
              f"bare aiosmtpd on {bare_port}, {sink_name} on {sink_port}", flush=True)

        targets: list[Target] = []
        if postfix is not None:
            targets.append(Target(POSTFIX, postfix.port, postfix.pids, postfix.user, postfix.password,
                                  postfix=postfix))
        targets.append(Target(BARE, bare_port, lambda: [bare.pid], "bench", key))
        if sink_name == "smtp-sink":
            targets.append(Target(SINK, sink_port, lambda: [sink.pid], "bench", "x", auth_250=True))
        targets.append(Target(RELAY, relay_port, lambda: [p.pid for p in relay_procs], "bench", key,
                              more_ports=relay_ports[1:]))
        targets = [t for t in targets if TARGET_NAMES[t.name] in args.targets.split(",")]
        relay_sent = 0

        results: dict[tuple[str, str], list[Run]] = {}
        payload_file = folder / "small.payload"
        payload_file.write_bytes(rawclient.dot_stuffed(smtp_bench.make_message(sender, args.size)))
        payload_file.chmod(0o644)
        per_run = f"{args.messages} messages" if args.messages else f"{args.seconds:g} s"
        generator = (f"{min(args.generators, args.clients)} bench/rawclient.py processes" if args.generator == "raw"
                     else "aiosmtplib in this process")
        print(f"\n{args.clients} clients ({generator}), {args.size}-byte messages, {per_run} per run, "
              f"{args.rounds} rounds", flush=True)
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}: {load_average()} (other processes on this machine compete)", flush=True)
            order = targets[round_ % len(targets):] + targets[:round_ % len(targets)]
            for mode in MODES:
                for target in order:
                    run = small_run(target, mode == "reuse", args, sender, payload_file)
                    results.setdefault((mode, target.name), []).append(run)
                    relay_sent += run.sent if target.name == RELAY else 0
                    print(f"round {round_ + 1} {mode:15} {target.name:15} {run.rate:8.1f} msg/s  "
                          f"p50 {run.p50:7.1f} ms  p99 {run.p99:7.1f} ms  peak RSS {run.rss_mb:6.0f} MB  "
                          f"failures {run.failures}" + "".join(f"; {n}" for n in run.notes), flush=True)

        large_mode = f"{LARGE_SIZE / MIB:g} MiB x{args.large_clients}"
        if not args.skip_large:
            payload = rawclient.dot_stuffed(smtp_bench.make_message(sender, LARGE_SIZE))
            large_targets = [t for t in targets if t.name != SINK]
            print(f"\n{args.large_clients} clients, {len(payload) / MIB:.2f} MiB messages (DATA payload), "
                  f"one connection per client, {args.large_seconds:g} s per run plus the messages in flight, "
                  f"{args.rounds} rounds", flush=True)
            for round_ in range(args.rounds):
                print(f"round {round_ + 1}: {load_average()}", flush=True)
                shift = round_ % len(large_targets)
                for target in large_targets[shift:] + large_targets[:shift]:
                    run = large_run(target, args, sender, payload)
                    results.setdefault((large_mode, target.name), []).append(run)
                    relay_sent += run.sent if target.name == RELAY else 0
                    print(f"round {round_ + 1} {large_mode:15} {target.name:15} {run.rate:8.2f} msg/s  "
                          f"p50 {run.p50:7.0f} ms  p99 {run.p99:7.0f} ms  peak RSS {run.rss_mb:6.0f} MB  "
                          f"failures {run.failures}, {run.sent} messages"
                          + "".join(f"; {n}" for n in run.notes), flush=True)

        report(args, results, targets, postfix, postfix_error, large_mode)

        async def count_sent() -> int:
            conn = await asyncpg.connect(dsn)
            try:
                return int(await conn.fetchval("SELECT count(*) FROM messages WHERE status = 'sent'"))
            finally:
                await conn.close()

        for proc in relay_procs:  # stopped, so that their backends report their statistics
            proc.send_signal(signal.SIGTERM)
        for proc in relay_procs:
            proc.wait(30)
        print(f"\nPostgreSQL per relay message (all runs, {relay_sent} messages):")
        for line in pgstats.report(pg_before, asyncio.run(pgstats.snapshot(dsn)), relay_sent):
            print(f"  {line}")
        print(f"\nchecks: {load_average()} at the end")
        print(f"checks: relay accepted {relay_sent} messages in the runs, log rows 'sent': "
              f"{asyncio.run(count_sent())}")
        if postfix is not None:
            print(f"checks: Postfix delivery log (smoke test included): {postfix_log_counts(postfix)}")
    finally:
        if postfix is not None:
            try:
                postfix.stop()
            except RuntimeError as exc:
                print(f"cleanup: {exc}", file=sys.stderr)
        for proc in procs:
            with contextlib.suppress(OSError):
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if pg is not None:
            pg.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def report(args: argparse.Namespace, results: dict[tuple[str, str], list[Run]], targets: list[Target],
           postfix: postfix_setup.PrivatePostfix | None, postfix_error: str, large_mode: str) -> None:
    best = {k: max(runs, key=lambda r: r.rate) for k, runs in results.items()}
    print(f"\nresults: mean of {args.rounds} rounds (best round in brackets); vs Postfix: the ratio of the "
          "rounds' means (each round's ratio in brackets);\nCPU ms/msg: mean over the rounds, the server's "
          "processes (relay: + PostgreSQL; Postfix: every process, until its queue was drained),\n"
          "the sink, the load generator, and the generator's share of the server's CPU (<= 20% wanted)")
    print(f"{'mode':16} {'target':15} {'msgs/s':>15} {'p50 ms':>7} {'p99 ms':>7} {'peak RSS':>8} "
          f"{'vs Postfix':>18} {'server':>11} {'sink':>5} {'gen':>5} {'gen/srv':>7}")
    modes = [*MODES] + ([] if args.skip_large else [large_mode])
    for mode in modes:
        refs = results.get((mode, POSTFIX), [])
        for target in targets:
            runs = results.get((mode, target.name))
            if not runs:
                continue
            rate = _mean([r.rate for r in runs])
            rss = max(r.rss_mb for r in runs)
            ratio = f"{'n/a':>18}"
            if refs and _mean([r.rate for r in refs]):
                each = "/".join(f"{r.rate / f.rate:.2f}" for r, f in zip(runs, refs, strict=False) if f.rate)
                ratio = f"{rate / _mean([r.rate for r in refs]):5.2f}x ({each})"
            digits = 2 if mode == large_mode else 0
            failures = sum(r.failures for r in runs)
            server = _mean([r.server_ms() for r in runs])
            detail = (f"{_mean([r.cpu.get('server', 0.0) for r in runs]):.2f}+"
                      f"{_mean([r.cpu.get('PostgreSQL', 0.0) for r in runs]):.2f}" if target.name == RELAY
                      else f"{server:.2f}")
            cpu_all = [r.cpu_all or r.cpu for r in runs]
            sink = _mean([c.get("sink", 0.0) for c in cpu_all])
            gen = _mean([c.get("generator", 0.0) for c in cpu_all])
            print(f"{mode:16} {target.name:15} {rate:6.{digits}f} ({best[(mode, target.name)].rate:6.{digits}f}) "
                  f"{_mean([r.p50 for r in runs]):7.1f} {_mean([r.p99 for r in runs]):7.1f} {rss:6.0f}MB "
                  f"{ratio:>18} {detail:>11} {sink:5.2f} {gen:5.2f} {gen / server if server else 0:6.0%}"
                  + (f"  ({failures} failures)" if failures else ""))
    print("peak RSS (MB = MiB): relay serve, bare aiosmtpd, smtp-sink: the process's VmHWM, reset before each "
          "run\n          (relay's PostgreSQL not included); Postfix: the largest sum of VmRSS over all processes "
          "of the\n          private instance (master and every child), sampled every 100 ms (shared pages "
          "counted in every process\n          that maps them; the run lines give the PSS sum too).")

    print("\nissue #17 targets (CPU per message holds on a busy machine; msgs/s only on a quiet one):")
    for mode in modes:
        relay_runs, ref_runs = results.get((mode, RELAY)), results.get((mode, POSTFIX))
        if not relay_runs or not ref_runs:
            print(f"  [n/a ] {mode}: relay + PostgreSQL CPU per message vs Postfix's "
                  f"({postfix_error or 'no Postfix result'})")
            continue
        mine, theirs = _mean([r.server_ms() for r in relay_runs]), _mean([r.server_ms() for r in ref_runs])
        ok = mine <= 0.5 * theirs
        print(f"  [{'PASS' if ok else 'FAIL'}] {mode}: relay + PostgreSQL CPU per message <= 0.5 x all of Postfix's "
              f"processes (queue drained): {mine:.2f} vs {theirs:.2f} ms ({mine / theirs:.2f}x)")
    for mode in modes:
        relay_runs, ref_runs = results.get((mode, RELAY)), results.get((mode, POSTFIX))
        if relay_runs and ref_runs:  # Postfix's acceptance runs ahead of its deliveries, most with large messages
            accepted, delivered = _mean([r.rate for r in ref_runs]), _mean([r.delivered for r in ref_runs])
            rate = _mean([r.rate for r in relay_runs])
            print(f"  [info] {mode}: Postfix accepted {accepted:.1f} msgs/s and delivered {delivered:.1f} msgs/s "
                  f"(until its queue was empty); relay (delivered before its reply) {rate:.1f}: "
                  f"{rate / accepted if accepted else 0:.2f}x accepted, {rate / delivered if delivered else 0:.2f}x "
                  "delivered")
    for mode in modes:
        for target in targets:
            runs = results.get((mode, target.name))
            if not runs or target.name in (SINK, BARE):
                continue
            gen = _mean([(r.cpu_all or r.cpu).get("generator", 0.0) for r in runs])
            server = _mean([r.server_ms() for r in runs])
            if server:
                print(f"  [{'PASS' if gen <= server / 5 else 'FAIL'}] {mode}: load generator CPU per message <= 1/5 "
                      f"of {target.name}'s: {gen:.2f} vs {server:.2f} ms ({gen / server:.0%})")

    print("\nissue #6 targets (means of the rounds; msgs/s and p99 hold only on a quiet machine):")
    unavailable = postfix_error or "no Postfix result"

    def verdict(ok: bool | None, text: str) -> None:
        label = "n/a " if ok is None else ("PASS" if ok else "FAIL")
        print(f"  [{label}] {text}")

    mean = {k: Run(_mean([r.rate for r in runs]), _mean([r.p50 for r in runs]), _mean([r.p99 for r in runs]),
                   0, 0.0) for k, runs in results.items()}
    for mode in MODES:
        relay, ref = mean.get((mode, RELAY)), mean.get((mode, POSTFIX))
        if relay is None or ref is None:
            verdict(None, f"{mode}: relay >= 1.5 x Postfix msgs/s, p99 <= Postfix's ({unavailable})")
            continue
        if not ref.rate:
            verdict(None, f"{mode}: relay >= 1.5 x Postfix msgs/s (no Postfix messages)")
            continue
        verdict(relay.rate >= 1.5 * ref.rate,
                f"{mode}: relay msgs/s >= 1.5 x Postfix: {relay.rate:.1f} vs 1.5 x {ref.rate:.1f} = "
                f"{1.5 * ref.rate:.1f} ({relay.rate / ref.rate:.2f}x)")
        verdict(relay.p99 <= ref.p99, f"{mode}: relay p99 <= Postfix p99: {relay.p99:.1f} ms vs {ref.p99:.1f} ms")
    if args.skip_large:
        verdict(None, "9.5 MiB targets (--skip-large)")
        return
    relay, ref = mean.get((large_mode, RELAY)), mean.get((large_mode, POSTFIX))
    if relay is not None and ref is not None:
        verdict(relay.rate >= ref.rate,
                f"{large_mode}: relay msgs/s >= Postfix: {relay.rate:.2f} vs {ref.rate:.2f}")
    else:
        verdict(None, f"{large_mode}: relay msgs/s >= Postfix ({unavailable})")
    if relay is not None:
        in_flight = args.large_clients * LARGE_SIZE / MIB
        limit = 1.2 * in_flight + 64
        rss = max(r.rss_mb for r in results[(large_mode, RELAY)])
        verdict(rss <= limit, f"{large_mode}: relay peak RSS <= 1.2 x bytes in flight + 64 MB: {rss:.0f} MB vs "
                f"1.2 x {in_flight:.0f} + 64 = {limit:.0f} MB")


if __name__ == "__main__":
    main()
