"""The Control API the CLI talks to: one module per resource."""
