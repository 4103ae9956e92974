"""The only code that knows etcd: the store, the per-manager view, election, presence."""
