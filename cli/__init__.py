"""orch.cli"""

import os

# grpc's C core logs a refused TLS handshake at INFO on stderr, a second, raw line beside
# the CLI's own one-line error; errors only, unless the user asks for more.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
