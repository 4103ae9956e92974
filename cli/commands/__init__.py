"""One module per command group; each has ``register(subparsers, common)`` that adds its
parsers with ``func`` set to a ``(Context) -> int`` function."""
