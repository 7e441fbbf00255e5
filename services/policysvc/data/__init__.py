"""Package data: the default PII matchers (default_pii_matchers.tsv)."""
