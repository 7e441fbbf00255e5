"""The private key is stored nowhere: not in the database, its files, the WAL, or any log."""

from __future__ import annotations

import io
from urllib.parse import urlsplit

import grpc
import pytest
from phiseal.common.v1 import common_pb2
from phiseal.keys.v1 import keys_pb2

from phiseal_dev.testing import PgCluster
from services.common.server.logging import configure_logging
from tests.keysvc.conftest import PASSPHRASE, PERSON, Keys, error_of
from tests.secret_search import data_files, flush_to_disk, needles, pem_body_lines, search


async def test_private_keys_appear_in_no_dump_file_wal_or_log(
    keys: Keys, pg_cluster: PgCluster
) -> None:
    """After generations (plain and passphrase-protected), a duplicate generate, a bad passphrase
    and a rotation, no private key shows up in pg_dump, the data directory (with WAL), the
    PostgreSQL log or the application log; the public keys are found (the search works)."""
    if pg_cluster.local is None:
        pytest.skip("needs the private PostgreSQL (DATABASE_URL points at an external server)")
    app_log = io.StringIO()
    configure_logging("debug", "json", stream=app_log)

    x = await keys.stub.GenerateKeyPair(
        keys_pb2.GenerateKeyPairRequest(destination_id=keys.destination_id), metadata=PERSON
    )
    duplicate = await error_of(
        keys.stub.GenerateKeyPair(
            keys_pb2.GenerateKeyPairRequest(destination_id=keys.destination_id), metadata=PERSON
        )
    )
    other = await keys.new_destination()
    weak = await error_of(
        keys.stub.GenerateKeyPair(
            keys_pb2.GenerateKeyPairRequest(destination_id=other, passphrase="weak-pass")
        )
    )
    rsa_reply = await keys.stub.GenerateKeyPair(
        keys_pb2.GenerateKeyPairRequest(
            destination_id=other, algorithm=common_pb2.KEY_ALGORITHM_RSA_2048, passphrase=PASSPHRASE
        ),
        metadata=PERSON,
    )
    rotated = await keys.stub.RegenerateKeyPair(
        keys_pb2.RegenerateKeyPairRequest(
            destination_id=keys.destination_id, activation=keys_pb2.ACTIVATION_AFTER_CONFIRMATION
        )
    )
    assert (duplicate[0], weak[0]) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INVALID_ARGUMENT,
    )

    secrets = (
        needles(x.private_key.private_key_pem)
        + needles(rsa_reply.private_key.private_key_pem, PASSPHRASE.encode())
        + needles(rotated.private_key.private_key_pem)
        + [PASSPHRASE.encode(), b"weak-pass"]
    )
    public = [line.encode() for line in pem_body_lines(x.key.public_key_pem)]

    await flush_to_disk(pg_cluster.admin_url)
    local = pg_cluster.local
    database = urlsplit(keys.database_url).path.lstrip("/")
    dump = local.tool(
        "pg_dump", "-h", "127.0.0.1", "-p", str(local.port), "-U", "postgres", database
    )
    data = list(data_files(local.data_dir))
    logs = [
        ("postgresql.log", local.log_file.read_bytes()),
        ("application log", app_log.getvalue().encode()),
    ]

    assert search([("pg_dump", dump.encode())], secrets) == []
    assert search(data, secrets) == []
    assert search(logs, secrets) == []
    # Positive controls: the same search finds what *is* stored, and the log was captured.
    assert search([("pg_dump", dump.encode())], public) == ["pg_dump"]
    assert search(data, public) != []
    assert "rpc_finished" in app_log.getvalue()
    assert any(name.startswith("pg_wal/") for name, _ in data)
