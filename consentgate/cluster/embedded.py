"""Start and stop one combined KRaft broker+controller and an Apicurio registry on loopback.

``up`` records what it started in ``<data-dir>/cluster.json``; ``down`` stops exactly
those processes (checked by pid, start time and command line) and nothing else.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from consentgate.catalog import Catalog, load_catalog
from consentgate.cluster import secure as secure_cluster
from consentgate.cluster.maven import apicurio_runner, kafka_classpath, require_tools
from consentgate.errors import ClusterError
from consentgate.security.tls import write_private
from consentgate.settings import CLUSTER_FILE, SECRET_FILE, Settings

_LOG4J2 = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.console.ref = STDOUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
"""

_PLAINTEXT = """listeners=PLAINTEXT://127.0.0.1:{bport},CONTROLLER://127.0.0.1:{cport}
advertised.listeners=PLAINTEXT://127.0.0.1:{bport}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
"""

_SERVER = """process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{cport}
log.dirs={logdir}
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=2000
transaction.abort.timed.out.transaction.cleanup.interval.ms=2000
log.cleaner.backoff.ms=2000
"""


@dataclass(frozen=True)
class ManagedProcess:
    """A process ``up`` started: enough to recognise it again and nothing more."""

    name: str
    pid: int
    started: str  # /proc start time, guards against a reused pid
    log: str


@dataclass(frozen=True)
class ClusterInfo:
    bootstrap_servers: str
    schema_registry_url: str
    processes: tuple[ManagedProcess, ...]
    secure: bool = False  # SASL_SSL + ACLs: clients need <data dir>/clients/<role>.properties


def _free_port(preferred: int | None = None) -> int:
    for candidate in ((preferred, 0) if preferred else (0,)):
        with socket.socket() as sock:
            # As the JVM servers do: a port whose old connections linger in TIME_WAIT is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise ClusterError("no free loopback port")


def _proc_start(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _is_ours(proc: ManagedProcess, data_dir: Path) -> bool:
    if _proc_start(proc.pid) != proc.started:
        return False
    try:
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return str(data_dir) in cmdline


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# Children this process started, so they are reaped here rather than left as zombies.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _spawn(name: str, argv: list[str], log: Path) -> tuple[subprocess.Popen[bytes], ManagedProcess]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    _CHILDREN[proc.pid] = proc
    started = _proc_start(proc.pid) or ""
    return proc, ManagedProcess(name, proc.pid, started, str(log))


def _start_kafka(settings: Settings, ports: dict[str, int], secure: bool
                 ) -> tuple[subprocess.Popen[bytes], ManagedProcess]:
    lib = kafka_classpath(settings.cache_dir, settings.kafka_version)
    home = settings.data_dir / "kafka"
    logdir = home / "data"
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    props = home / "server.properties"
    extra_format: list[str] = []
    if secure:
        broker = secure_cluster.broker_secrets(settings.data_dir)
        listeners = secure_cluster.listener_properties(settings.data_dir, ports, broker)
        extra_format = secure_cluster.format_arguments(broker)
    else:
        listeners = _PLAINTEXT.format(bport=ports["broker"], cport=ports["controller"])
    # 0600: in secure mode it holds the broker's own passwords.
    write_private(props, (listeners + _SERVER.format(cport=ports["controller"], logdir=logdir)).encode())
    log4j = home / "log4j2.properties"
    log4j.write_text(_LOG4J2)
    classpath = f"{lib}/*"
    if not (logdir / "meta.properties").exists():
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        fmt = subprocess.run(["java", "-cp", classpath, "kafka.tools.StorageTool", "format",
                              "-t", cluster_id, "-c", str(props), *extra_format], capture_output=True, text=True)
        if fmt.returncode != 0:
            output = fmt.stdout + fmt.stderr
            for argument in extra_format:  # the --add-scram argument holds the broker's password
                output = output.replace(argument, "***")
            raise ClusterError(f"formatting KRaft storage failed (exit {fmt.returncode}):\n{output}")
    return _spawn("kafka", ["java", "-Xms256m", "-Xmx768m", f"-Dlog4j2.configurationFile={log4j}",
                            "-Dkafka.logs.dir=" + str(home / "logs"), "-cp", classpath, "kafka.Kafka",
                            str(props)], home / "kafka.log")


def _start_registry(settings: Settings, port: int) -> tuple[subprocess.Popen[bytes], ManagedProcess]:
    runner = apicurio_runner(settings.cache_dir, settings.apicurio_version)
    home = settings.data_dir / "registry"
    home.mkdir(parents=True, exist_ok=True)
    # H2 on disk, so schema ids stay valid for the Kafka data kept across down/up.
    return _spawn("registry", ["java", "-Xmx384m", f"-Dquarkus.http.port={port}",
                               "-Dquarkus.http.host=127.0.0.1",
                               f"-Dapicurio.datasource.url=jdbc:h2:file:{home}/registry;DB_CLOSE_ON_EXIT=FALSE",
                               "-jar", str(runner)], home / "registry.log")


def _kafka_ready(conf: dict[str, Any]) -> bool:
    try:
        AdminClient({**conf, "log_level": 0}).list_topics(timeout=1.0)
    except Exception:  # noqa: BLE001 - any failure just means "not yet"
        return False
    return True


def _registry_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/subjects", timeout=1.0) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def status(settings: Settings) -> ClusterInfo | None:
    """The running embedded cluster recorded in the data dir, or None."""
    record = settings.data_dir / CLUSTER_FILE
    if not record.exists():
        return None
    raw = json.loads(record.read_text())
    info = ClusterInfo(raw["bootstrap_servers"], raw["schema_registry_url"],
                       tuple(ManagedProcess(**p) for p in raw["processes"]), raw.get("secure", False))
    if all(_is_ours(p, settings.data_dir) for p in info.processes):
        return info
    return None


def up(settings: Settings, secure: bool = False, catalog: Catalog | None = None) -> ClusterInfo:
    """Start the embedded cluster, or restart only what died of one already recorded, on its ports.

    ``secure``: SASL_SSL only, ACLs, one SCRAM user and client file per role (``cluster.secure``);
    the roles' ACLs follow ``settings`` (topic prefix, groups) and ``catalog`` (one trainer per purpose).
    """
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    settings.data_dir.chmod(0o700)  # it holds the pseudonym secret and, when secure, every password
    _check_mode(settings.data_dir, secure)
    record = settings.data_dir / CLUSTER_FILE
    alive: dict[str, ManagedProcess] = {}
    if record.exists():
        raw = json.loads(record.read_text())
        alive = {p.name: p for p in (ManagedProcess(**p) for p in raw["processes"]) if _is_ours(p, settings.data_dir)}
    require_tools()
    ports_file = settings.data_dir / "ports.json"
    previous = json.loads(ports_file.read_text()) if ports_file.exists() else {}
    ports: dict[str, int] = {}
    for name in ("broker", "controller", "registry"):
        owner = "kafka" if name in ("broker", "controller") else "registry"
        port = previous[name] if owner in alive and name in previous else _free_port(previous.get(name))
        while port in ports.values():
            port = _free_port()
        ports[name] = port
    ports_file.write_text(json.dumps(ports))
    secret = settings.data_dir / SECRET_FILE
    if not secret.exists():
        write_private(secret, base64.urlsafe_b64encode(os.urandom(32)).decode().encode())

    bootstrap = f"127.0.0.1:{ports['broker']}"
    registry_url = f"http://127.0.0.1:{ports['registry']}/apis/ccompat/v7"
    probe: dict[str, Any] = (secure_cluster.broker_conf(settings.data_dir, bootstrap) if secure
                             else {"bootstrap.servers": bootstrap})
    checks = {"kafka": lambda: _kafka_ready(probe), "registry": lambda: _registry_ready(registry_url)}
    starters = {"kafka": lambda: _start_kafka(settings, ports, secure),
                "registry": lambda: _start_registry(settings, ports["registry"])}
    started: list[tuple[subprocess.Popen[bytes], ManagedProcess]] = []
    try:
        for name in ("kafka", "registry"):
            if name not in alive:
                started.append(starters[name]())
        deadline = time.monotonic() + settings.startup_timeout_s
        pending = {"kafka", "registry"}
        restarted: set[str] = set()
        while pending:
            for name in sorted(pending):
                popen = next((p for p, m in started if m.name == name), None)
                if popen is not None and popen.poll() is not None:
                    log = next(m.log for _, m in started if m.name == name)
                    if name == "registry" and name not in restarted:
                        # On a loaded machine the registry can time out opening its own H2 store at
                        # start; a second start, on the same port and store, then succeeds.
                        _CHILDREN.pop(popen.pid, None)
                        started = [(p, m) for p, m in started if m.name != name]
                        started.append(starters[name]())
                        restarted.add(name)
                        continue
                    raise ClusterError(f"{name} exited with {popen.returncode}; last lines of {log}:\n"
                                       f"{_tail(Path(log))}")
                if checks[name]():
                    pending.discard(name)
            if pending and time.monotonic() > deadline:
                name = sorted(pending)[0]
                log = alive[name].log if name in alive else next(m.log for _, m in started if m.name == name)
                raise ClusterError(f"{name} not ready after {settings.startup_timeout_s:.0f}s; "
                                   f"last lines of {log}:\n{_tail(Path(log))}")
            if pending:
                time.sleep(0.2)
        if secure:
            secure_cluster.provision(settings, catalog or load_catalog(settings.catalog), bootstrap)
    except BaseException:
        for popen, _ in started:
            popen.kill()
            popen.wait()
            _CHILDREN.pop(popen.pid, None)
        raise
    processes = tuple(alive.get(name) or next(m for _, m in started if m.name == name) for name in ("kafka", "registry"))
    info = ClusterInfo(bootstrap, registry_url, processes, secure)
    record.write_text(json.dumps(asdict(info), indent=2))
    return info


def _check_mode(data_dir: Path, secure: bool) -> None:
    """A data dir formatted plaintext cannot start secure, nor the other way round: say so."""
    marker = data_dir / "kafka" / "mode"
    wanted = "secure" if secure else "plaintext"
    if (data_dir / "kafka" / "data" / "meta.properties").exists():
        found = marker.read_text().strip() if marker.exists() else "plaintext"
        if found != wanted:
            flag = "without --secure" if found == "plaintext" else "with --secure"
            raise ClusterError(f"{data_dir} holds a {found} cluster: run `consentgate up` {flag} there, "
                               "or use another --data-dir")
    else:
        marker.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        marker.write_text(wanted + "\n")


def down(settings: Settings, timeout_s: float = 20.0) -> list[ManagedProcess]:
    """Stop exactly the processes ``up`` recorded; returns those it stopped."""
    record = settings.data_dir / CLUSTER_FILE
    if not record.exists():
        return []
    raw = json.loads(record.read_text())
    ours = [p for p in (ManagedProcess(**p) for p in raw["processes"]) if _is_ours(p, settings.data_dir)]
    for proc in ours:
        os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for proc in ours:
        while _is_ours(proc, settings.data_dir) and time.monotonic() < deadline:
            _reap(proc.pid)
            time.sleep(0.1)
        if _is_ours(proc, settings.data_dir):
            os.kill(proc.pid, signal.SIGKILL)
        _reap(proc.pid)
    record.unlink()
    return ours


def _reap(pid: int) -> None:
    """Collect the exit status when ``pid`` is our own child, so it leaves no zombie."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _CHILDREN[pid]
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
