"""orch.runtime: run containers as real OCI containers, for the agent.

Knows nothing of tasks or protobuf; the agent hands in ``model.ContainerConfig`` and an
``model.Image``. Read in this order: ``containers`` (the facade: create, start, wait,
stop, exec, remove, list, read_logs, sweep), ``exec`` (`runc exec` as an asyncio
process), ``images`` + ``layers`` (skopeo pulls, layers
unpacked once with overlayfs whiteouts), ``rootfs`` (overlay mounts), ``spec`` (the pure
config.json builder, with the container defaults) + ``seccomp`` (its profile, seccomp.json), ``runc`` (the CLI), ``shim`` (the per-container monitor that keeps
containers alive across agent restarts), ``logs`` (CRI log reading), ``cgroups``.
"""
