"""Node liveness: which nodes go DOWN and which tasks are orphaned."""
