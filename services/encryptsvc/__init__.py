"""encryptsvc: the EncryptEvents hot path over cached policies and public keys."""
