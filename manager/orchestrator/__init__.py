"""Services -> tasks: the pure reconcile core (replicated, global, rolling updates) and its loop."""
