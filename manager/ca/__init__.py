"""The cluster CA on the managers: its records in the store (records.py), the join and
renewal services (service.py), and the manager's own TLS identity (tls.py)."""
