"""What a command gets to run with: its parsed arguments, the output streams, the
settings and a Control API client that is made on first use (so `orch dev` and argument
errors never need a manager address)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TextIO

from orch.cli.client import ControlClient
from orch.cli.config import CliSettings, load_cli_tls, resolve_manager_addresses, resolve_tls_dir


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Context:
    args: argparse.Namespace
    out: TextIO
    """Text output; commands that print raw bytes (logs) write to ``out.buffer``."""
    err: TextIO
    env: Mapping[str, str]
    settings: CliSettings = field(default_factory=CliSettings)
    parser: argparse.ArgumentParser | None = None
    """The whole command line's parser, for commands generated from it (completion)."""
    now: Callable[[], datetime] = _utcnow
    _client: ControlClient | None = None

    def client(self) -> ControlClient:
        if self._client is None:
            addresses = resolve_manager_addresses(getattr(self.args, "manager", None), env=self.env)
            tls_dir = resolve_tls_dir(getattr(self.args, "tls_dir", None), env=self.env)
            self._client = ControlClient(addresses, self.settings, tls=load_cli_tls(tls_dir))
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
