"""The global-service orchestrator's decision logic: one task on every eligible node.

Called by :func:`core.reconcile` for services with ``mode: GLOBAL``. Why its own module:
which nodes a global service runs on (eligibility) is particular to it; what runs on an
eligible node is the slot rule (slots.py) that replicated slots follow too, so a global
service restarts, backs off and keeps history exactly like a replicated slot. The
difference is what a "slot" is: here it is a node. Tasks are tied to their node at creation
(``target_node``; slot 0), and the scheduler places them there or nowhere, as swarmkit's
global orchestrator presets the node. A drained node is not eligible, so the slot rule's
moves never apply here.

What a node's state means for the service's task on it (Swarm's rules):

* eligible (not DOWN, ACTIVE, every constraint of the service's *current* spec holds):
  one live task; a missing or ended one is (re)started per the restart policy;
* DRAIN, or a constraint no longer holds (a label was removed or changed, the spec's
  constraints changed): the node's tasks are shut down and not replaced anywhere;
* PAUSE: what runs keeps running; nothing new is started there;
* DOWN: nothing is done. The node monitor marks its tasks ORPHANED; they are not replaced
  elsewhere, and when the node comes back its orphaned task is replaced on it;
* removed (``orch node rm``): its tasks are deleted; a node that registers again is a
  node like any other and gets its task.

Tasks without a target node (left from a time the service was replicated) are cleared.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from orch import placement
from orch.manager.orchestrator import slots
from orch.manager.orchestrator.plan import PlanBuilder, Slot
from orch.proto import objects_pb2, types_pb2

Task = objects_pb2.Task
Service = objects_pb2.Service
Node = objects_pb2.Node

GLOBAL_SLOT = 0
"""The slot of every global task: the node, not a number, tells them apart."""


def eligibility(service: Service, node: Node | None) -> str:
    """What the service does on ``node``: "run", "keep" (paused: keep what runs),
    "wait" (down: leave everything as it is) or "clear" (shut down, do not replace)."""
    if node is None:
        return "clear"
    if node.status.state == types_pb2.NODE_DOWN:
        return "wait"
    availability = node.spec.availability
    if availability == types_pb2.DRAIN:
        return "clear"
    if not constraints_hold(service, node):
        return "clear"
    if availability == types_pb2.PAUSE:
        return "keep"
    return "run"


def constraints_hold(service: Service, node: Node) -> bool:
    """Whether every constraint of the service's current spec holds on ``node``. A spec
    with a constraint that does not parse (only possible when written around the Control
    API) runs nowhere."""
    try:
        constraints = placement.parse_constraints(service.spec.placement.constraints)
    except placement.PlacementError:
        return False
    return placement.first_unmet(constraints, node) is None


def eligible_nodes(service: Service, nodes: Sequence[Node]) -> list[str]:
    """Ids of the nodes on which the service wants a task started (for `orch ls`-style
    counts and tests)."""
    return sorted(n.id for n in nodes if eligibility(service, n) == "run")


def reconcile_global(b: PlanBuilder, service: Service, tasks: Sequence[Task]) -> None:
    """Add to ``b``'s plan what the global ``service`` needs: per node, per its
    eligibility, one live task or none."""
    by_node: dict[str, list[Task]] = defaultdict(list)
    strays = []
    for task in tasks:
        if task.target_node:
            by_node[task.target_node].append(task)
        else:
            strays.append(task)
    b.clear(strays)
    for node_id in sorted(set(b.nodes) | set(by_node)):
        verdict = eligibility(service, b.nodes.get(node_id))
        node_tasks = by_node.get(node_id, [])
        if verdict == "clear":
            b.clear(node_tasks)
        elif verdict == "run":
            slots.fill(b, service, Slot(GLOBAL_SLOT, node_id), node_tasks)
        # "keep" and "wait": what is there stays as it is.
