"""NEW tasks -> overlay addresses: the pure IPAM core and its loop."""
