"""PENDING tasks -> nodes: the pure scheduling core and its loop."""
