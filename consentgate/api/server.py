"""Running the consent service: in the foreground (``consentgate serve``) or in a thread (demo, tests, bench)."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from types import FrameType, TracebackType

import uvicorn

from consentgate.api.app import create_app
from consentgate.api.config import ApiSettings
from consentgate.api.service import ConsentService
from consentgate.catalog import Catalog
from consentgate.errors import ConsentGateError
from consentgate.settings import Settings

log = logging.getLogger(__name__)


def serve(settings: Settings, config: ApiSettings, catalog: Catalog) -> int:
    """Serve until SIGINT/SIGTERM; the writer is warmed before the port opens."""
    config.verification_key()  # refuse to start without a way to verify tokens
    signal.signal(signal.SIGTERM, _stop_while_starting)
    service = ConsentService(settings, catalog)
    try:
        app = create_app(service, config)
        # uvicorn handles SIGTERM while it serves and re-raises it once it has shut down; by then the
        # service is stopping anyway, so the re-raised signal is ignored and the command exits 0.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        log.info("consent service on http://%s:%d/ (API docs at /docs)", config.host, config.port)
        uvicorn.run(app, host=config.host, port=config.port, log_level="warning", access_log=False,
                    server_header=False)
    finally:
        service.close()
    return 0


def _stop_while_starting(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


class ServiceThread:
    """The consent service on a background thread, listening on ``config.port`` (0: a free port)."""

    def __init__(self, settings: Settings, config: ApiSettings, catalog: Catalog) -> None:
        self.service = ConsentService(settings, catalog)
        self.app = create_app(self.service, config)
        self._server = uvicorn.Server(uvicorn.Config(self.app, host=config.host, port=config.port,
                                                     log_level="warning", access_log=False,
                                                     server_header=False, lifespan="off"))
        self._thread = threading.Thread(target=self._run, name="consent-service", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self._server.serve())
        except BaseException as exc:  # noqa: BLE001 - surfaced by __enter__/__exit__
            self.error = exc

    @property
    def url(self) -> str:
        server = self._server.servers[0]
        host, port = server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> ServiceThread:
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                self.service.close()
                raise ConsentGateError(f"the consent service did not start: {self.error}")
            self._thread.join(0.05)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._server.should_exit = True
        self._thread.join(30)
        self.service.close()
