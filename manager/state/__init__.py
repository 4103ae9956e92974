"""The manager's state: the Store protocol and keyspace (api.py), its two implementations (store.py, the only code that imports etcd3aio; memstore.py), the per-manager view, election, presence."""
