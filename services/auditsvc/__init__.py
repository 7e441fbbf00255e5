"""auditsvc: the append-only, hash-chained HIPAA audit log."""
