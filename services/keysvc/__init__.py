"""keysvc: destination key pairs, one-time private-key delivery, rotation, imported keys."""
