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

import subprocess
from pathlib import Path

from ppml.cli.deployment import Steps, local_deployment, ppml_command

__all__ = ["run_demo"]


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


def run_demo(*, workdir: Path, rows: int, seed: int | None = None, jvm: bool = False) -> int:
    """The workflow; with ``jvm`` the job is the Java SimpleQuery (ppml's JVM library through
    ``ppml submit --class``: Spark's own csv reader and writer over envelopes), else the Python one."""
    from ppml.datagen import generate_people

    workdir = workdir.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    plain, encrypted = workdir / "people.csv", workdir / "people.csv.ppml"
    output, decrypted = workdir / "result.ppml", workdir / "result"
    steps = Steps()
    print(f"ppml demo in {workdir}")
    print("NOTE: the TEE in this demo is SIMULATED (no SGX/TDX here): every step and check is real, but no "
          "hardware protects data in use.\n")

    summary = steps.run(f"generate {rows:,} people", lambda: generate_people(plain, rows, seed=seed),
                        lambda s: f"{plain.name} ({plain.stat().st_size:,} bytes); expected answer "
                        f"{s.developers_20_40}")
    with local_deployment(workdir, steps, entrypoint=_example_path()) as deployment:
        env, kms_uri = deployment.env, deployment.kms_uri
        input_key, output_key = steps.run(
            "create primary keys: input (release policy) and results",
            lambda: (deployment.create_key("people (releases to the policy only)", gated=True),
                     deployment.create_key("SimpleQuery results", gated=False)),
            lambda k: f"{k[0]} (gated), {k[1]}")
        steps.run("encrypt people.csv (ppml envelope, fresh data key, AES-256-GCM streaming)",
                  lambda: ppml_command("encrypt", str(plain), str(encrypted), "--key", input_key, "--kms", kms_uri,
                                       "--force", env=env),
                  lambda _: f"{encrypted.name} ({encrypted.stat().st_size:,} bytes)")

        def submit() -> str:
            if jvm:
                from ppml.spark.jvm import library_jar

                app = ["--class", "org.ppml.examples.SimpleQuery", str(library_jar())]
            else:
                app = [str(_example_path())]
            result: subprocess.CompletedProcess[str] = deployment.submit(
                [*app, "--inputPath", str(encrypted), "--inputEncryptModeValue", "ppml",
                 "--outputPath", str(output), "--outputEncryptModeValue", "ppml", "--outputPartitionNum", "2",
                 "--kms", kms_uri, "--primaryKey", output_key],
                name="SimpleQuery", log=workdir / "submit.log",
                extra=["--event-log-dir", str(workdir / "spark-events")])
            shown = [line for line in result.stdout.splitlines() if line.startswith(("Attestation", "Num of"))]
            for line in shown:
                print(f"     | {line}")
            if result.returncode != 0:
                raise SystemExit(f"SimpleQuery failed (exit {result.returncode}); see {workdir / 'submit.log'}")
            return next((line for line in shown if line.startswith("Num of Developer")), "")

        answer = steps.run(f"submit {'the Java ' if jvm else ''}SimpleQuery in local-tee mode (simulated TEE, "
                           "local[2])", submit, lambda line: "event log in spark-events/")
        steps.run("decrypt the output (as the data owner)",
                  lambda: ppml_command("decrypt", str(output), str(decrypted), "--kms", kms_uri, "--force", env=env),
                  lambda _: f"{decrypted.name}/ ({len(list(decrypted.glob('part-*')))} part files)")
        count = steps.run("count developers aged 20-40 in the decrypted output", lambda: _count_developers(decrypted),
                          str)

    expected = summary.developers_20_40
    if count != expected or str(expected) not in answer:
        print(f"FAILED: the generator says {expected}; the job said {answer!r}; the decrypted output has {count}")
        return 1
    print(f"\nOK: Num of Developer age between 20,40 is {count}, as the generator said ({steps.elapsed:.1f} s in all).")
    print(f"Spark event logs: {workdir / 'spark-events'} (README: how to open them in the history server)")
    return 0
