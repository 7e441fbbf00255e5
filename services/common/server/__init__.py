"""Server plumbing every service shares: the gRPC server, interceptor, health, logging, settings."""
