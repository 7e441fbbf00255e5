-- The hybrid post-quantum key type, ML-KEM-768 + X25519 (X-Wing): one more allowed algorithm.
ALTER TABLE key_versions DROP CONSTRAINT key_versions_algorithm_check;
ALTER TABLE key_versions ADD CONSTRAINT key_versions_algorithm_check
    CHECK (algorithm IN ('x25519', 'rsa-2048', 'rsa-3072', 'rsa-4096', 'mlkem768-x25519'));
