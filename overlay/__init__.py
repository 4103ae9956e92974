"""orch.overlay: container networking on one agent.

settings.py   NetworkSettings: prefix, state dir, bridge subnet, MTU, host netns
names.py      names of netns and links (per-agent prefix), MAC from IP
netns.py      named netns: create/delete/list (native), run work inside one, ip netns exec
rtnl.py       a small blocking rtnetlink client (struct-packed link/addr/route messages)
ipam.py       host-local IPAM: pure Pool + IpamStore (atomic JSON file)
links.py      HostNet Protocol (what drivers ask of the kernel) + KernelNet (rtnl)
driver.py     NetworkDriver Protocol and Attachment
bridge.py     BridgeDriver: the agent-local bridge network (Docker's default)
endpoints.py  EndpointManager: per-container netns + attachments, records, sweep, adopt
"""
