"""Server plumbing shared by all four services; never imports a service."""
