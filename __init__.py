"""orch: a multi-host container orchestrator.

The repository root is this package; read it along the data path:
manifests -> cli -> proto -> manager (controlapi, store, orchestrator, scheduler,
dispatcher) -> agent (session, worker) -> runtime (images, runc) + overlay (netns, veth).
"""
