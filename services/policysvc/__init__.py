"""policysvc: workspaces, destinations, PII classification and versioned encryption policies."""
