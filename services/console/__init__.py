"""The web console: server-rendered screens over the four services, with the person's own token."""
