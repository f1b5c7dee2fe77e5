"""Where workers serve their metrics, and how ``consentgate top`` finds them.

A worker that serves metrics writes ``<data dir>/metrics/<kind>-<worker>.json``::

    {"kind": "gate", "worker": "host-1", "url": "http://127.0.0.1:9464/metrics",
     "pid": 4242, "host": "myhost", "started_at": "2026-11-28T18:00:00+00:00"}

and removes it when it stops serving. A registration whose process is gone (killed
-9) is ignored by discovery on the same host, and reported as stale.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from consentgate.errors import ConfigurationError

METRICS_DIR = "metrics"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class Registration:
    """One worker's metrics endpoint, as recorded in the data directory."""

    kind: str
    worker: str
    url: str
    pid: int
    host: str
    started_at: str


@dataclass(frozen=True)
class Discovery:
    """What discovery found: live endpoints, and files it did not use (with why)."""

    endpoints: list[Registration]
    ignored: list[tuple[Path, str]]


def file_name(kind: str, worker: str) -> str:
    """A file name for (kind, worker) that is safe whatever the worker id contains."""
    safe = _SAFE.sub("_", worker)[:80]
    if safe != worker:
        safe += "-" + hashlib.sha256(worker.encode()).hexdigest()[:8]
    return f"{_SAFE.sub('_', kind)}-{safe}.json"


class MetricsServer:
    """A running metrics endpoint (and its registration file, if it wrote one)."""

    def __init__(self, server: WSGIServer, thread: threading.Thread, url: str, registration: Path | None) -> None:
        self._server = server
        self._thread = thread
        self.url = url
        self.registration = registration

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop serving and remove the registration."""
        if self.registration is not None:
            self.registration.unlink(missing_ok=True)
            self.registration = None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def serve(registry: CollectorRegistry, port: int, host: str = "127.0.0.1", *, kind: str = "gate",
          worker: str | None = None, data_dir: Path | None = None) -> MetricsServer:
    """Serve ``registry`` on host:port (port 0 picks a free one) and register it under ``data_dir``."""
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigurationError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
    # A wildcard bind is reachable on loopback; a named address is where scrapers must go.
    reach = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    if ":" in reach and not reach.startswith("["):
        reach = f"[{reach}]"
    url = f"http://{reach}:{server.server_port}/metrics"
    path = None
    if data_dir is not None:
        worker = worker or socket.gethostname()
        path = register(data_dir, Registration(kind, worker, url, os.getpid(), socket.gethostname(),
                                               datetime.now(timezone.utc).isoformat(timespec="seconds")))
    return MetricsServer(server, thread, url, path)


def register(data_dir: Path, registration: Registration) -> Path:
    """Write the registration atomically (a reader never sees half a file)."""
    folder = data_dir / METRICS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name(registration.kind, registration.worker)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(registration), sort_keys=True))
    tmp.replace(path)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, but alive
    return True


def discover(data_dir: Path, this_host: str | None = None) -> Discovery:
    """Every registered endpoint under ``data_dir``; unreadable or dead ones are listed as ignored."""
    folder = data_dir / METRICS_DIR
    this_host = this_host or socket.gethostname()
    found: list[Registration] = []
    ignored: list[tuple[Path, str]] = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            raw: Any = json.loads(path.read_text())
            reg = Registration(**{k: raw[k] for k in Registration.__dataclass_fields__})
            if not isinstance(reg.url, str) or not reg.url.startswith(("http://", "https://")):
                raise ValueError(f"url {reg.url!r} is not http(s)")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            ignored.append((path, f"unreadable registration: {exc}"))
            continue
        if reg.host == this_host and isinstance(reg.pid, int) and not _alive(reg.pid):
            ignored.append((path, f"stale: process {reg.pid} is gone"))
            continue
        found.append(reg)
    return Discovery(found, ignored)
