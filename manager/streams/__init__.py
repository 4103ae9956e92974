"""Logs and exec: brokers on the node's manager and forwarding between managers."""
