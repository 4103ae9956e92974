"""orch.overlay: container networking on one agent.

settings.py   NetworkSettings: prefix, state dir, bridge subnet, MTU, host netns
names.py      names of netns and links (per-agent prefix)
netns.py      named netns: create/delete/list (native), run work inside one, ip netns exec
rtnl.py       a small blocking rtnetlink client (struct-packed link/addr/route messages)
ipam.py       host-local IPAM: pure Pool + IpamStore (atomic JSON file)
links.py      HostNet/OverlayNet Protocols (what drivers ask of the kernel) + KernelNet (rtnl)
driver.py     NetworkDriver Protocol and Attachment
bridge.py     BridgeDriver: the agent-local bridge network (Docker's default)
peers.py      static FDB/neighbour entries of a VXLAN device: PeerTable and its diff (pure)
vxlan.py      OverlayDriver: one VXLAN overlay network (bridge + vxlan device + peers)
ports.py      published ports: nft DNAT per endpoint (PortPublisher; scripts pure)
records.py    endpoint records and sweep plans (pure)
endpoints.py  EndpointManager: per-container netns + attachments, records, sweep, adopt
"""
