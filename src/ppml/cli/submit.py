"""``ppml submit``: argument parsing for spark-submit's options plus ppml's (wiring only)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


def cmd_submit(args: argparse.Namespace) -> int:
    from ppml.spark.submit import SubmitOptions, submit

    conf = []
    for item in args.conf or []:
        if "=" not in item:
            from ppml.errors import UsageError

            raise UsageError(f"--conf needs NAME=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        conf.append((name, value))
    options = SubmitOptions(
        app=args.app, app_args=tuple(args.app_args), master=args.master, deploy_mode=args.deploy_mode,
        name=args.name, driver_memory=args.driver_memory, executor_memory=args.executor_memory,
        executor_cores=args.executor_cores, num_executors=args.num_executors, conf=tuple(conf),
        py_files=tuple(p for spec in (args.py_files or []) for p in spec.split(",") if p), verbose=args.verbose,
        tee=args.tee, policy=tuple(args.policy or ()),
        attestation_url=args.attestation_url or os.environ.get("PPML_AS_URL"),
        attestation_ca=_path(args.attestation_ca or os.environ.get("PPML_AS_CA")),
        enclave_manifest=_path(args.enclave_manifest), enclave_sig=_path(args.enclave_sig),
        platform_key=_path(args.platform_key), secret_file=_path(args.secret_file),
        event_log_dir=_path(args.event_log_dir), registration_timeout=args.registration_timeout,
        k8s_image=args.k8s_image, k8s_namespace=args.k8s_namespace, k8s_rpc_secret=args.k8s_rpc_secret,
        k8s_kms_credentials=args.k8s_kms_credentials, k8s_ca=args.k8s_ca, render_only=_path(args.render_only),
    )
    return submit(options)


def cmd_history_server(args: argparse.Namespace) -> int:
    from ppml.spark.history import history_server_command

    event_log_dir = Path(args.event_log_dir)
    argv, env = history_server_command(event_log_dir, port=args.port, host=args.host, verbose=args.verbose)
    print(f"Spark history server for {event_log_dir}: http://{args.host}:{args.port} (it takes a few seconds to "
          "start; Ctrl-C stops it)", file=sys.stderr, flush=True)
    # Replace this process (spark-class execs java in turn): a signal to it reaches the server.
    os.execve(argv[0], argv, env)


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def add_commands(commands: Any) -> None:
    p = commands.add_parser(
        "submit", help="submit a Spark application (spark-submit with ppml's security and TEE modes)",
        description="Mirror of spark-submit. --tee none runs without a TEE; --tee simulated|sgx-gramine|tdx "
        "attests the driver before anything runs, and every Python worker attests itself before it may "
        "receive a data key. Secrets go in a 0600 properties file, never on a command line.",
    )
    p.add_argument("--master", default="local[2]")
    p.add_argument("--deploy-mode", default="client", choices=["client", "cluster"])
    p.add_argument("--name")
    p.add_argument("--driver-memory")
    p.add_argument("--executor-memory")
    p.add_argument("--executor-cores", type=int)
    p.add_argument("--num-executors", type=int)
    p.add_argument("--conf", action="append", metavar="NAME=VALUE")
    p.add_argument("--py-files", action="append", metavar="FILES")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--tee", default="none", choices=["none", "simulated", "sgx-gramine", "tdx"])
    p.add_argument("--policy", action="append", metavar="ID", help="attestation policy id (repeat for several)")
    p.add_argument("--attestation-url", metavar="URL", help="https://HOST:PORT (or $PPML_AS_URL)")
    p.add_argument("--attestation-ca", metavar="FILE", help="CA of the attestation service (or $PPML_AS_CA)")
    p.add_argument("--enclave-manifest", metavar="FILE", help="--tee simulated: the enclave manifest")
    p.add_argument("--enclave-sig", metavar="FILE", help="--tee simulated: its SIGSTRUCT")
    p.add_argument("--platform-key", metavar="FILE", help="--tee simulated: the platform key")
    p.add_argument("--secret-file", metavar="FILE", help="Spark RPC secret (0600) shared with the cluster")
    p.add_argument("--event-log-dir", metavar="DIR", help="write Spark event logs here (history server)")
    p.add_argument("--registration-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="standalone: give up if the driver has not joined the cluster by then")
    p.add_argument("--k8s-image", metavar="IMAGE", help="Kubernetes: the ppml/Spark container image")
    p.add_argument("--k8s-namespace", default="default", metavar="NS")
    p.add_argument("--k8s-rpc-secret", metavar="SECRET[:KEY]", help="Kubernetes Secret holding the Spark RPC secret")
    p.add_argument("--k8s-kms-credentials", metavar="SECRET[:KEY]", help="Kubernetes Secret with the KMS credentials")
    p.add_argument("--k8s-ca", metavar="CONFIGMAP[:KEY]", help="ConfigMap with the KMS/AS CA certificate")
    p.add_argument("--render-only", metavar="DIR", help="write pod templates and properties to DIR and print the "
                   "spark-submit command instead of running it")
    p.add_argument("app", metavar="APP")
    p.add_argument("app_args", nargs=argparse.REMAINDER, metavar="ARGS")
    p.set_defaults(func=cmd_submit)

    p = commands.add_parser(
        "history-server", help="run Spark's history server over event logs (ppml submit --event-log-dir)",
        description="Run Spark's history server (from the pyspark package, whatever shell it is started from) "
        "over DIR, in the foreground, on http://HOST:PORT. Spark logs only warnings unless --verbose.",
    )
    p.add_argument("--event-log-dir", required=True, metavar="DIR", help="the directory given to "
                   "`ppml submit --event-log-dir`")
    p.add_argument("--port", type=int, default=18080, help="HTTP port (default 18080)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only; "
                   "the UI has no authentication)")
    p.add_argument("--verbose", action="store_true", help="Spark's INFO logging")
    p.set_defaults(func=cmd_history_server)
