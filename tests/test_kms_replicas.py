"""Two `ppml serve` replicas on one PostgreSQL database: keys made on one work on the other, and
concurrent operations through both leave one linear, verifiable audit chain."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from ppml.kms.remote import KmsEndpoint, RemoteKms, load_credentials
from server_fixtures import new_database
from servers import KmsServer


@pytest.mark.postgres
@pytest.mark.slow
def test_two_replicas_share_keys_and_one_audit_chain(pg_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = new_database(pg_cluster)
    first = KmsServer(tmp_path / "replica-1", db_url=url)
    try:
        # The second replica shares the database and the root key (its data dir gets a copy).
        second_dir = tmp_path / "replica-2"
        second_dir.mkdir()
        shutil.copy2(first.data_dir / "root.key", second_dir / "root.key")
        second = KmsServer(second_dir, db_url=url)
        try:
            admin = load_credentials(first.admin_credentials)
            assert not (second_dir / "admin.credentials").exists(), "the admin exists once, in the database"
            one = RemoteKms(KmsEndpoint.parse(first.uri()), admin)
            two = RemoteKms(KmsEndpoint.parse(second.uri()), admin)
            key_id = one.create_primary_key().key_id
            generated = two.generate_data_key(key_id)
            assert one.unwrap_data_key(key_id, generated.wrapped) == generated.data_key
            two.set_enabled(key_id, False)
            from ppml.errors import KeyDisabled

            with pytest.raises(KeyDisabled):
                one.generate_data_key(key_id)
            two.set_enabled(key_id, True)

            failures: list[BaseException] = []

            def work(client: RemoteKms) -> None:
                try:
                    for _ in range(40):
                        g = client.generate_data_key(key_id)
                        client.unwrap_data_key(key_id, g.wrapped)
                except BaseException as exc:
                    failures.append(exc)

            threads = [threading.Thread(target=work, args=(c,)) for c in (one, two, one, two)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert failures == []
            one.close()
            two.close()
        finally:
            second.stop()
    finally:
        first.stop()
    import subprocess
    import sys

    verified = subprocess.run([sys.executable, "-m", "ppml.cli.main", "kms", "audit", "verify", "--data-dir",
                               str(tmp_path / "replica-1"), "--db", url], capture_output=True, text=True, check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "chain verified" in verified.stdout
    records = int(verified.stdout.split(":")[1].split()[0])
    assert records >= 4 * 40 * 2
