"""The agents' sessions: assignments, overlay peers, DNS records, status back into etcd."""
