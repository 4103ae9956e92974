"""Removes what one agent of a local cluster made, after its process is gone.

Used by `orch dev down`, by the next `orch dev up` after a crash, and by test fixtures.
It asks the runtime and the network layer to remove what is recorded under the agent's
own state dir and carries the agent's own prefix, so it can never touch another
cluster's (or anybody else's) objects.
"""

from __future__ import annotations

from pathlib import Path

from orch.overlay.endpoints import EndpointManager
from orch.overlay.settings import NetworkSettings
from orch.runtime.containers import ContainerRuntime
from orch.runtime.settings import RuntimeSettings


async def agent_leftovers(agent: dict) -> None:
    state_dir = Path(agent["state_dir"])
    runtime = ContainerRuntime(
        RuntimeSettings(
            state_dir=state_dir / "runtime",
            runc_root=Path(agent["runc_root"]),
            cgroup_parent=agent["cgroup"],
        )
    )
    if runtime.settings.containers_dir.exists():
        await runtime.sweep(everything=True)  # runc delete --force: kills what still runs
    endpoints = EndpointManager(
        NetworkSettings(
            prefix=agent["prefix"], state_dir=state_dir, bridge_subnet=agent["bridge_subnet"]
        )
    )
    await endpoints.remove_all()
