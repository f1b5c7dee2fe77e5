"""Entry point of the ``consentgate`` command."""

from __future__ import annotations

from consentgate.cli import early  # first: a SIGTERM during start-up must not kill a worker mid-start

import argparse
import logging
import signal
import sys

from pydantic import ValidationError

from consentgate.cli import (
    audit_cmds, cluster_cmds, consent_cmds, demo_cmds, gate_cmds, io_cmds, metering_cmds, ops_cmds, serve_cmds,
    sink_cmds,
)
from consentgate.errors import ConsentGateError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="consentgate", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    for module in (cluster_cmds, io_cmds, consent_cmds, gate_cmds, metering_cmds, demo_cmds, ops_cmds, serve_cmds,
                   sink_cmds, audit_cmds):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not getattr(args, "worker", False):  # only workers finish their batch on SIGTERM
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if early.RECEIVED:
            return 128 + signal.SIGTERM
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.run(args))
    except ValidationError as exc:
        print(f"consentgate: invalid setting: {exc}", file=sys.stderr)
    except ConsentGateError as exc:
        print(f"consentgate: {exc}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
