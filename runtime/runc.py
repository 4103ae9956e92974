"""Async wrappers over the OCI runtime CLI (runc, or crun which has the same surface).

Only the calls the agent side needs live here: state, kill, delete, list. Starting a
container is the shim's job (it must outlive the agent and own the container's stdio);
see shim.py for the `run --detach` call.

Every call runs ``<binary> --root <root> ...`` so each agent's containers live in its own
runtime root. Failures become ContainerError carrying the runtime's own message; "does
not exist" answers become None / no-ops where the caller asked an idempotent question.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orch.errors import ContainerError
from orch.runtime.util import error_line, run

_NOT_EXIST = ("does not exist", "not exist", "no such file or directory", "not found")
_NOT_RUNNING = ("not running", "container not running", "process already finished")


class OciRuntime:
    def __init__(
        self, binary: str = "runc", root: Path = Path("/run/runc"), *, timeout: float = 30.0
    ) -> None:
        self.binary = binary
        self.root = Path(root)
        self.timeout = timeout

    def _argv(self, *args: str) -> list[str]:
        return [self.binary, "--root", str(self.root), *args]

    async def _call(self, *args: str) -> tuple[int, bytes, str]:
        try:
            done = await run(self._argv(*args), time_limit=self.timeout)
        except TimeoutError as exc:
            raise ContainerError(f"{self.binary} {' '.join(args)}: timed out") from exc
        except OSError as exc:
            raise ContainerError(f"cannot run {self.binary}: {exc}") from exc
        return done.returncode, done.stdout, error_line(done.stderr, f"exit {done.returncode}")

    def exists(self, container_id: str) -> bool:
        """Whether the runtime has state for the container (runc and crun keep root/<id>/)."""
        return (self.root / container_id).exists()

    async def state(self, container_id: str) -> dict[str, Any] | None:
        """The runtime's state document (status: created|running|paused|stopped), or None."""
        if not self.exists(container_id):
            return None
        rc, out, err = await self._call("state", container_id)
        if rc != 0:
            if not self.exists(container_id) or _matches(err, _NOT_EXIST):
                return None
            raise ContainerError(f"{self.binary} state {container_id}: {err}")
        try:
            return json.loads(out)
        except ValueError as exc:
            raise ContainerError(f"{self.binary} state {container_id}: bad JSON") from exc

    async def kill(self, container_id: str, signal: str = "SIGTERM", *, all: bool = False) -> bool:
        """Send a signal to the container's init (every process with ``all``).
        Returns False when the container is gone or no longer running."""
        args = ["kill", *(["--all"] if all else []), container_id, signal]
        rc, _, err = await self._call(*args)
        if rc == 0:
            return True
        if not self.exists(container_id) or _matches(err, _NOT_EXIST + _NOT_RUNNING):
            return False
        raise ContainerError(f"{self.binary} kill {container_id} {signal}: {err}")

    async def delete(self, container_id: str, *, force: bool = False) -> None:
        """Delete the container's runtime state and cgroup; a no-op when it is gone."""
        if not self.exists(container_id):
            return
        rc, _, err = await self._call("delete", *(["--force"] if force else []), container_id)
        if rc != 0 and self.exists(container_id) and not _matches(err, _NOT_EXIST):
            raise ContainerError(f"{self.binary} delete {container_id}: {err}")

    async def list(self) -> list[dict[str, Any]]:
        """Every container in this runtime root, as the runtime lists them."""
        if not self.root.exists():
            return []
        rc, out, err = await self._call("list", "--format", "json")
        if rc != 0:
            raise ContainerError(f"{self.binary} list: {err}")
        data = json.loads(out or b"null")
        return list(data or [])


def _matches(message: str, needles: tuple[str, ...]) -> bool:
    low = message.lower()
    return any(n in low for n in needles)
