"""A whole local deployment for the demo and the examples: ``ppml serve``, an enrolled app, a
signed enclave for one entrypoint, its policy, primary keys, and ``ppml submit --tee simulated``.

Each step is a real command (``ppml serve``, ``ppml enclave …``, ``ppml attest register``, ``ppml
key create``) run as a user would run it, printed with its time by :class:`Steps`. The TEE is
SIMULATED: the policy allows it and says so; nothing here is a production set-up.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["LocalDeployment", "LocalServer", "Steps", "local_deployment", "ppml_command", "stop_process"]

T = TypeVar("T")


class Steps:
    """Numbered steps, each printed with its duration and a one-line result."""

    def __init__(self) -> None:
        self.number = 0
        self.started = time.perf_counter()

    def run(self, title: str, action: Callable[[], T], result: Callable[[T], str] | None = None) -> T:
        self.number += 1
        print(f"[{self.number:2d}] {title} ...", flush=True)
        t0 = time.perf_counter()
        value = action()
        detail = f": {result(value)}" if result else ""
        print(f"     done in {time.perf_counter() - t0:.2f} s{detail}", flush=True)
        return value

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def ppml_command(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``ppml ARGS`` with this interpreter; exit the calling command, with its output, if it fails."""
    result = subprocess.run([sys.executable, "-m", "ppml.cli.main", *args], env=env, text=True,
                            capture_output=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"step failed: ppml {' '.join(args[:2])} exited {result.returncode}\n"
                         f"{result.stdout}{result.stderr}")
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalServer:
    """``ppml serve`` (KMS + attestation service): dev TLS, loopback, accepting the SIMULATED platform."""

    def __init__(self, data_dir: Path, platform_public: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.log = data_dir.parent / "serve.log"
        log = open(self.log, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ppml.cli.main", "serve", "--data-dir", str(data_dir), "--tls-dev",
             "--port", str(self.port), "--trust-simulated-platform", str(platform_public)],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca(self) -> Path:
        return self.data_dir / "tls" / "ca.pem"

    def wait(self, timeout: float = 60.0) -> str:
        import httpx

        from ppml.transport import client_context

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"ppml serve exited:\n{self.log.read_text(errors='replace')[-2000:]}")
            if self.ca.exists():
                try:
                    if httpx.get(f"{self.url}/healthz", verify=client_context(self.ca), timeout=2).status_code == 200:
                        return self.url
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
        raise SystemExit("ppml serve did not become ready in time")

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if ``process`` has not exited within ``timeout`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclasses.dataclass
class LocalDeployment:
    """What :func:`local_deployment` set up: the service, the app's KMS URI and environment, and
    the enclave whose policy gates the keys."""

    workdir: Path
    server: LocalServer
    env: dict[str, str]
    kms_uri: str
    platform_key: Path
    manifest: Path
    sig: Path
    mr_enclave: str
    mr_signer: str
    policy_id: str = ""

    def create_key(self, description: str, *, gated: bool) -> str:
        """A primary key; ``gated``: its data keys release only to the policy (SIMULATED allowed)."""
        release = ["--release-policy", self.policy_id, "--allow-simulated"] if gated else []
        return ppml_command("key", "create", "--kms", self.kms_uri, "--description", description, *release,
                            env=self.env).stdout.strip()

    def submit(self, app: Sequence[str], *, name: str, log: Path, master: str = "local[2]",
               extra: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
        """``ppml submit --tee simulated`` of ``app`` (a .py file and its arguments, or ``--class C
        JAR …``) against the policy; its output also goes to ``log``."""
        result = subprocess.run(
            [sys.executable, "-m", "ppml.cli.main", "submit", "--master", master, "--tee", "simulated",
             "--policy", self.policy_id, "--attestation-url", self.server.url,
             "--attestation-ca", str(self.server.ca), "--enclave-manifest", str(self.manifest),
             "--enclave-sig", str(self.sig), "--platform-key", str(self.platform_key), "--name", name,
             "--conf", "spark.ui.showConsoleProgress=false", *extra, *app],
            env={**self.env, "SPARK_LOCAL_IP": "127.0.0.1"}, text=True, capture_output=True, check=False)
        log.write_text(result.stdout + result.stderr)
        return result


@contextmanager
def local_deployment(workdir: Path, steps: Steps, *, entrypoint: Path) -> Iterator[LocalDeployment]:
    """Start ``ppml serve`` under ``workdir``, enroll an app, build, measure and sign an enclave for
    ``entrypoint`` (trusting ppml's code and it), and register its policy; stop the server on exit.
    Re-running reuses the work directory (the enclave key, the platform key)."""
    from ppml.kms.remote import KmsEndpoint, RemoteKms, load_credentials, write_credentials
    from ppml.tee.simulated import load_or_create_platform_key

    enclave = workdir / "enclave"
    enclave.mkdir(parents=True, exist_ok=True)
    platform_key = workdir / "simulated-platform" / "platform-key.pem"
    load_or_create_platform_key(platform_key)
    server = LocalServer(workdir / "kms", platform_key.with_name("platform-public.pem"))
    try:
        url = steps.run("start ppml serve (KMS + attestation service, dev TLS on 127.0.0.1)", server.wait,
                        lambda u: f"{u}; clients verify {server.ca.relative_to(workdir)}")
        env = {**os.environ, "PPML_AS_URL": url, "PPML_AS_CA": str(server.ca), "PPML_KMS_CA": str(server.ca)}
        credentials = workdir / "app-credentials.json"

        def enroll() -> str:
            admin = RemoteKms(KmsEndpoint.parse(f"ppml+https://127.0.0.1:{server.port}?ca={server.ca}"),
                              load_credentials(workdir / "kms" / "admin.credentials"))
            app = admin.enroll()
            admin.close()
            write_credentials(credentials, app.appid, app.apikey.decode())
            return app.appid

        steps.run("enroll the application", enroll, lambda a: f"appid {a}, credentials in {credentials.name} (0600)")
        env["PPML_KMS_CREDENTIALS"] = str(credentials)
        kms_uri = f"ppml+https://127.0.0.1:{server.port}?ca={server.ca}&credentials={credentials}"

        key = enclave / "enclave-key.pem"
        manifest, sig = enclave / f"{entrypoint.stem}.manifest.toml", enclave / f"{entrypoint.stem}.sig"

        def enclave_identity() -> tuple[str, str]:
            if not key.exists():
                ppml_command("enclave", "keygen", str(key))
            import ppml

            package = Path(ppml.__file__).parent
            ppml_command("enclave", "build", "--app", str(package), "--entrypoint", str(entrypoint),
                         "--python-path", str(package.parent), "--out", str(manifest), "--force")
            measured = ppml_command("enclave", "measure", str(manifest), "--key", str(key)).stdout.split()
            sig.unlink(missing_ok=True)
            ppml_command("enclave", "sign", str(manifest), "--key", str(key), "--out", str(sig))
            return measured[2], measured[5]

        mr_enclave, mr_signer = steps.run(
            "enclave: keygen (RSA-3072, e=3), build manifest, measure, sign SIGSTRUCT", enclave_identity,
            lambda i: f"mr_enclave : {i[0]}, mr_signer : {i[1]}")
        deployment = LocalDeployment(workdir=workdir, server=server, env=env, kms_uri=kms_uri,
                                     platform_key=platform_key, manifest=manifest, sig=sig,
                                     mr_enclave=mr_enclave, mr_signer=mr_signer)
        deployment.policy_id = steps.run(
            "register the policy (allow_simulated: the TEE here is simulated)",
            lambda: ppml_command("attest", "register", "--mr-enclave", mr_enclave, "--mr-signer", mr_signer,
                                 "--allow-simulated", env=env).stdout.strip(),
            lambda p: f"policy_id {p}")
        yield deployment
    finally:
        steps.run("stop ppml serve", server.stop)
