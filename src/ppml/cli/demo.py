"""``ppml demo``: the whole SimpleQuery workflow on embedded defaults, each step printed with its time.

generate people.csv → start ``ppml serve`` (KMS + attestation service, dev TLS, loopback) → enroll
an app → enclave keygen, build, measure, sign → register the policy (SIMULATED TEE allowed, and
said so) → create a primary key that releases only to that policy → encrypt people.csv → submit
SimpleQuery in local-tee mode (prints ``Attestation Success!``; every Python worker attests itself
and receives data keys as JWE) → decrypt the output → compare the count with the generator's →
stop the server. Re-running reuses the work directory.

The TEE here is SIMULATED: the workflow and every check run for real, but no hardware protects
data in use. The demo manifest trusts ppml's code and the example, not the whole Python
environment (a real Gramine manifest from ``ppml enclave build`` lists every file).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

__all__ = ["run_demo"]

T = TypeVar("T")


class _Steps:
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


def _ppml(*args: str, env: dict[str, str] | None = None, capture: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "ppml.cli.main", *args], env=env, text=True,
                            capture_output=capture, check=False)
    if result.returncode != 0:
        output = (result.stdout or "") + (result.stderr or "") if capture else ""
        raise SystemExit(f"demo step failed: ppml {' '.join(args[:2])} exited {result.returncode}\n{output}")
    return result


def _example_path() -> Path:
    import ppml.spark.examples.simple_query as example

    return Path(example.__file__)


def _count_developers(directory: Path) -> int:
    count = 0
    for part in sorted(directory.glob("part-*")):
        with open(part, encoding="utf-8") as f:
            header = f.readline().rstrip("\n").split(",")
            age, job = header.index("age"), header.index("job")
            for line in f:
                fields = line.rstrip("\n").split(",")
                if fields[job] == "Developer" and 20 <= int(fields[age]) <= 40:
                    count += 1
    return count


class _Server:
    """``ppml serve`` for the demo: dev TLS, loopback, accepting the demo's SIMULATED platform."""

    def __init__(self, data_dir: Path, platform_public: Path) -> None:
        self.data_dir = data_dir
        self.port = _free_port()
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
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()


def run_demo(*, workdir: Path, rows: int, seed: int | None = None, jvm: bool = False) -> int:
    """The workflow; with ``jvm`` the job is the Java SimpleQuery (ppml's JVM library through
    ``ppml submit --class``: Spark's own csv reader and writer over envelopes), else the Python one."""
    from ppml.core.keys import SECRET_ACCESS  # noqa: F401  (documents that no key is exported here)
    from ppml.datagen import generate_people
    from ppml.kms.remote import KmsEndpoint, RemoteKms, load_credentials, write_credentials
    from ppml.tee.simulated import load_or_create_platform_key

    workdir = workdir.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    plain, encrypted = workdir / "people.csv", workdir / "people.csv.ppml"
    output, decrypted = workdir / "result.ppml", workdir / "result"
    enclave = workdir / "enclave"
    enclave.mkdir(exist_ok=True)
    steps = _Steps()
    print(f"ppml demo in {workdir}")
    print("NOTE: the TEE in this demo is SIMULATED (no SGX/TDX here): every step and check is real, but no "
          "hardware protects data in use.\n")

    summary = steps.run(f"generate {rows:,} people", lambda: generate_people(plain, rows, seed=seed),
                        lambda s: f"{plain.name} ({plain.stat().st_size:,} bytes); expected answer "
                        f"{s.developers_20_40}")
    platform_key = workdir / "simulated-platform" / "platform-key.pem"
    load_or_create_platform_key(platform_key)
    server = _Server(workdir / "kms", platform_key.with_name("platform-public.pem"))
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

        steps.run("enroll the application", enroll, lambda a: f"appid {a}, credentials in "
                          f"{credentials.name} (0600)")
        env["PPML_KMS_CREDENTIALS"] = str(credentials)
        kms_uri = f"ppml+https://127.0.0.1:{server.port}?ca={server.ca}&credentials={credentials}"

        key = enclave / "enclave-key.pem"
        manifest, sig = enclave / "simple_query.manifest.toml", enclave / "simple_query.sig"

        def enclave_identity() -> dict[str, str]:
            if not key.exists():
                _ppml("enclave", "keygen", str(key))
            import ppml

            package = Path(ppml.__file__).parent
            _ppml("enclave", "build", "--app", str(package), "--entrypoint", str(_example_path()),
                  "--python-path", str(package.parent), "--out", str(manifest), "--force")
            measured = _ppml("enclave", "measure", str(manifest), "--key", str(key)).stdout.split()
            sig.unlink(missing_ok=True)
            _ppml("enclave", "sign", str(manifest), "--key", str(key), "--out", str(sig))
            return {"mr_enclave": measured[2], "mr_signer": measured[5]}

        identity = steps.run("enclave: keygen (RSA-3072, e=3), build manifest, measure, sign SIGSTRUCT",
                             enclave_identity, lambda i: f"mr_enclave : {i['mr_enclave']}, mr_signer : "
                             f"{i['mr_signer']}")
        policy_id = steps.run(
            "register the policy (allow_simulated: the demo's TEE is simulated)",
            lambda: _ppml("attest", "register", "--mr-enclave", identity["mr_enclave"], "--mr-signer",
                          identity["mr_signer"], "--allow-simulated", env=env).stdout.strip(),
            lambda p: f"policy_id {p}")

        def create_keys() -> tuple[str, str]:
            # allow_simulated: the demo's TEE is simulated, and a release policy refuses it by default
            gated = _ppml("key", "create", "--kms", kms_uri, "--description", "people (releases to the policy only)",
                          "--release-policy", policy_id, "--allow-simulated", env=env).stdout.strip()
            results = _ppml("key", "create", "--kms", kms_uri, "--description", "SimpleQuery results",
                            env=env).stdout.strip()
            return gated, results

        input_key, output_key = steps.run("create primary keys: input (release policy) and results",
                                          create_keys, lambda k: f"{k[0]} (gated), {k[1]}")
        steps.run("encrypt people.csv (ppml envelope, fresh data key, AES-256-GCM streaming)",
                  lambda: _ppml("encrypt", str(plain), str(encrypted), "--key", input_key, "--kms", kms_uri,
                                "--force", env=env),
                  lambda _: f"{encrypted.name} ({encrypted.stat().st_size:,} bytes)")

        def submit() -> str:
            events = workdir / "spark-events"
            if jvm:
                from ppml.spark.jvm import library_jar

                app = ["--class", "org.ppml.examples.SimpleQuery", str(library_jar())]
            else:
                app = [str(_example_path())]
            result = subprocess.run(
                [sys.executable, "-m", "ppml.cli.main", "submit", "--master", "local[2]", "--tee", "simulated",
                 "--policy", policy_id, "--attestation-url", url, "--attestation-ca", str(server.ca),
                 "--enclave-manifest", str(manifest), "--enclave-sig", str(sig), "--platform-key", str(platform_key),
                 "--event-log-dir", str(events), "--name", "SimpleQuery",
                 "--conf", "spark.ui.showConsoleProgress=false",
                 *app, "--inputPath", str(encrypted), "--inputEncryptModeValue", "ppml",
                 "--outputPath", str(output), "--outputEncryptModeValue", "ppml", "--outputPartitionNum", "2",
                 "--kms", kms_uri, "--primaryKey", output_key],
                env={**env, "SPARK_LOCAL_IP": "127.0.0.1"}, text=True, capture_output=True, check=False)
            (workdir / "submit.log").write_text(result.stdout + result.stderr)
            shown = [line for line in result.stdout.splitlines()
                     if line.startswith(("Attestation", "Num of"))]
            for line in shown:
                print(f"     | {line}")
            if result.returncode != 0:
                raise SystemExit(f"SimpleQuery failed (exit {result.returncode}); see {workdir / 'submit.log'}")
            return next((line for line in shown if line.startswith("Num of Developer")), "")

        answer = steps.run(f"submit {'the Java ' if jvm else ''}SimpleQuery in local-tee mode (simulated TEE, "
                           "local[2])", submit,
                           lambda line: "event log in spark-events/")
        steps.run("decrypt the output (as the data owner)",
                  lambda: _ppml("decrypt", str(output), str(decrypted), "--kms", kms_uri, "--force", env=env),
                  lambda _: f"{decrypted.name}/ ({len(list(decrypted.glob('part-*')))} part files)")
        count = steps.run("count developers aged 20-40 in the decrypted output", lambda: _count_developers(decrypted),
                          str)
    finally:
        steps.run("stop ppml serve", server.stop)

    total = time.perf_counter() - steps.started
    expected = summary.developers_20_40
    if count != expected or str(expected) not in answer:
        print(f"FAILED: the generator says {expected}; the job said {answer!r}; the decrypted output has {count}")
        return 1
    print(f"\nOK: Num of Developer age between 20,40 is {count}, as the generator said ({total:.1f} s in all).")
    print(f"Spark event logs: {workdir / 'spark-events'} (README: how to open them in the history server)")
    return 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
