"""PHIseal's four gRPC services and the plumbing they share."""
