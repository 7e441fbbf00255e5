"""Development tooling no running service imports: local PostgreSQL, PKI, tokens, devstack."""
