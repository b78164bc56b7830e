"""Real servers for tests: a throwaway PostgreSQL cluster and ``ppml serve`` processes, on loopback.

Nothing is mocked: PostgreSQL comes from the distribution's binaries (``.ci/run`` installs them
when missing), the KMS is the real ``ppml serve`` command with development TLS, and clients
verify its certificate.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from ppml.cli.deployment import stop_process
from ppml.kms.tls import client_context


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bindir() -> Path:
    if os.environ.get("PPML_TEST_PG_BINDIR"):
        return Path(os.environ["PPML_TEST_PG_BINDIR"])
    config = shutil.which("pg_config")
    if config:
        out = subprocess.run([config, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if out and (Path(out) / "initdb").exists():
            return Path(out)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    if candidates:
        return Path(candidates[-1])
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError("PostgreSQL server binaries not found: apt-get install postgresql (see .ci/run)")


class PostgresCluster:
    """initdb + postgres on 127.0.0.1:<free port>, owned by the ``postgres`` user when run as root."""

    def __init__(self) -> None:
        self.bindir = _pg_bindir()
        # Its own directory under /tmp: pytest's tmp dirs are 0700 root, which postgres cannot enter.
        base = Path(tempfile.mkdtemp(prefix="ppml-test-pg-"))
        self.base = base
        self.data = base / "pgdata"
        self.socket_dir = base / "sock"
        self.port = free_port()
        self._as_root = os.geteuid() == 0
        self.socket_dir.mkdir(exist_ok=True)
        if self._as_root:
            shutil.chown(base, "postgres")
            shutil.chown(self.socket_dir, "postgres")
        self._run([str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                   "-E", "UTF8", "--no-sync"])
        self.log = base / "postgres.log"
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                   "-o", f"-h 127.0.0.1 -p {self.port} -k {self.socket_dir} -c fsync=on", "start"])
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, argv: list[str]) -> None:
        if self._as_root:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, check=False, cwd="/")
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {result.stdout}{result.stderr}")

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self, mode: str = "fast") -> None:
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except RuntimeError:
            pass
        shutil.rmtree(self.base, ignore_errors=True)

    def start(self) -> None:
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                   "-o", f"-h 127.0.0.1 -p {self.port} -k {self.socket_dir}", "start"])


class KmsServer:
    """``ppml serve --tls-dev`` in a subprocess; ready once /healthz answers over verified TLS."""

    def __init__(self, data_dir: Path, *, db_url: str | None = None, extra: list[str] | None = None,
                 port: int | None = None) -> None:
        self.data_dir = data_dir
        self.db_url = db_url
        self.extra = extra or []
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.start()

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca(self) -> Path:
        return self.data_dir / "tls" / "ca.pem"

    @property
    def admin_credentials(self) -> Path:
        return self.data_dir / "admin.credentials"

    def uri(self, scheme: str = "ppml+https", credentials: Path | None = None) -> str:
        query = f"?ca={self.ca}" + (f"&credentials={credentials}" if credentials else "")
        return f"{scheme}://127.0.0.1:{self.port}{query}"

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "ppml.cli.main", "serve", "--data-dir", str(self.data_dir),
                "--tls-dev", "--port", str(self.port), *self.extra]
        if self.db_url:
            argv += ["--db", self.db_url]
        return argv

    def start(self, timeout: float = 60.0) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ppml serve exited with {self.process.returncode}:\n{self.log()}")
            if self.ca.exists():
                try:
                    response = httpx.get(f"{self.base_url}/healthz", verify=client_context(self.ca), timeout=2)
                    if response.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"ppml serve did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers, no flushing."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process:
            stop_process(self.process)

    def admin(self) -> dict[str, str]:
        return dict(json.loads(self.admin_credentials.read_text()))


class MotoS3Server:
    """moto's standalone server, an S3-compatible endpoint, as a process on 127.0.0.1:<free port>
    (its HTTP API, not moto's in-process patching): the object storage the tests talk to."""

    def __init__(self, timeout: float = 30.0) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.NamedTemporaryFile(prefix="ppml-test-moto-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto_server exited {self.process.returncode}: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto_server did not listen within {timeout} s: {self.log()}") from None
                time.sleep(0.1)

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        stop_process(self.process, timeout=10)
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)


class ModelServer:
    """``ppml serve-model ARGS`` in a subprocess, with development TLS and a token file in
    ``directory``; :meth:`wait` returns once /healthz answers over verified TLS, or the process exited."""

    def __init__(self, directory: Path, args: list[str], *, env: dict[str, str] | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.port = free_port()
        self.token_file = directory / "token"
        self.tls_dir = directory / "tls"
        self.stdout_path, self.stderr_path = directory / "stdout.log", directory / "stderr.log"
        argv = [sys.executable, "-m", "ppml.cli.main", "serve-model", *args, "--port", str(self.port),
                "--tls-dev", str(self.tls_dir), "--token-file", str(self.token_file)]
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                            env={**(env or os.environ), "PYTHONUNBUFFERED": "1"})

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca(self) -> Path:
        return self.tls_dir / "ca.pem"

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    def listening(self) -> bool:
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def wait(self, timeout: float = 120.0) -> bool:
        """True once ready; False if the process exited first (see :meth:`stdout`, :meth:`stderr`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if self.ca.exists() and self.listening():
                try:
                    response = httpx.get(f"{self.base_url}/healthz", verify=client_context(self.ca), timeout=2)
                    if response.status_code == 200:
                        return True
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"ppml serve-model did not become ready:\n{self.stdout()}{self.stderr()}")

    def watch_until_exit(self, timeout: float = 120.0) -> bool:
        """Poll the port until the process exits; True if it ever accepted a connection."""
        listened = False
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            listened = listened or self.listening()
            time.sleep(0.02)
        self.process.wait(timeout=10)
        return listened or self.listening()

    def client(self, *, token: str | None = None) -> httpx.Client:
        """A verified-TLS client sending the server's token (or ``token``)."""
        return httpx.Client(base_url=self.base_url, verify=client_context(self.ca), timeout=30,
                            headers={"Authorization": f"Bearer {token or self.token}"})

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.process)
