"""PostgreSQL: the pool and migrations, the audit outbox and its relay, change feeds, paging."""
