"""Node liveness: which nodes go DOWN and which tasks are orphaned: the pure core and its loop."""
