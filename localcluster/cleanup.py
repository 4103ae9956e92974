"""Removes what one agent of a local cluster made, after its process is gone.

Used by `orch dev down`, by the next `orch dev up` after a crash, and by test fixtures.
It asks the runtime and the network layer to remove what is recorded under the agent's
own state dir and carries the agent's own prefix, so it can never touch another
cluster's (or anybody else's) objects.

The agent ran inside its host's netns, so its bridge and the host ends of its veths are
there: the EndpointManager is pointed at that netns (``NetworkSettings.host_netns``; its
netlink work runs on threads that enter it). Container netns are named netns, visible
from anywhere. When the host netns is already gone (a run that crashed while making it)
only the container netns can be left, and they are deleted by the agent's prefix.
"""

from __future__ import annotations

from pathlib import Path

from orch.overlay import names
from orch.overlay.endpoints import EndpointManager
from orch.overlay.netns import delete_netns, list_netns, netns_exists
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
    host = agent.get("netns")  # None: a run from before agents had hosts
    if host is not None and not netns_exists(host):
        for name in list_netns(names.owned_prefix(agent["prefix"])):
            await delete_netns(name)
        return
    endpoints = EndpointManager(
        NetworkSettings(
            prefix=agent["prefix"],
            state_dir=state_dir,
            bridge_subnet=agent["bridge_subnet"],
            host_netns=host,
        )
    )
    await endpoints.remove_all()
