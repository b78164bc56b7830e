"""``ppml submit``: argument parsing for spark-submit's options plus ppml's (wiring only)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ppml.cli._args import add_attestation_options, integer
from ppml.deploy.images import ENCLAVE_APP
from ppml.errors import UsageError

__all__ = ["add_commands"]


def cmd_submit(args: argparse.Namespace) -> int:
    from ppml.spark.submit import SubmitOptions, submit

    if args.packages:
        raise UsageError(
            "ppml submit does not take --packages: Spark would resolve them from Maven repositories at submit "
            "time, and no repository can be reached offline; download the jars and pass them with "
            "--jars a.jar,b.jar (local paths)")
    options = SubmitOptions(
        app=args.app, app_args=tuple(args.app_args), master=args.master, deploy_mode=args.deploy_mode,
        main_class=args.main_class, name=args.name, driver_memory=args.driver_memory, driver_cores=args.driver_cores,
        executor_memory=args.executor_memory, executor_cores=args.executor_cores, num_executors=args.num_executors,
        total_executor_cores=args.total_executor_cores, jars=_paths(args.jars), py_files=_paths(args.py_files),
        files=_paths(args.files), archives=_paths(args.archives), conf=tuple(args.conf or ()),
        properties_file=_path(args.properties_file), verbose=args.verbose,
        tee=args.tee, policy=tuple(args.policy or ()),
        attestation_url=args.attestation_url or os.environ.get("PPML_AS_URL"),
        attestation_ca=_path(args.attestation_ca or os.environ.get("PPML_AS_CA")),
        enclave_manifest=_path(args.enclave_manifest), enclave_sig=_path(args.enclave_sig),
        platform_key=_path(args.platform_key), secret_file=_path(args.secret_file),
        event_log_dir=_path(args.event_log_dir), registration_timeout=args.registration_timeout,
        k8s_image=args.k8s_image, k8s_namespace=args.k8s_namespace, k8s_rpc_secret=args.k8s_rpc_secret,
        k8s_kms_credentials=args.k8s_kms_credentials, k8s_ca=args.k8s_ca, render_only=_path(args.render_only),
    )
    if options.tee == "sgx-gramine" and not options.master.startswith("k8s://") and options.render_only is None:
        from ppml.tee.gramine.launch import inside_gramine, run_under_gramine

        if not inside_gramine():
            # The driver runs in the enclave: this same command, started there by the manifest's fixed argv
            # (ppml tee gramine-entry), where /dev/attestation exists and the gate attests as in every mode.
            return run_under_gramine(args.enclave_app, ["submit", *args.submit_argv], os.environ)
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


def _paths(values: list[str] | None) -> tuple[str, ...]:
    """spark-submit's comma-separated lists, from one or several occurrences of the option."""
    return tuple(p for spec in values or () for p in spec.split(",") if p)


def _conf(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value


_count = integer(1)


MODES = """\
modes (chosen by --tee and --master/--deploy-mode):

  mode       how to ask                   what runs in a TEE             TEE backends that fit
  ---------  ---------------------------  -----------------------------  ------------------------
  local      --tee none (default)         nothing (Spark's RPC           -
                                          authentication and encryption
                                          are still on)
  local-tee  --tee X --master local[N]    this machine: the driver       sgx-gramine (started
                                          passes the attestation gate,   under gramine-sgx on an
                                          then every Python worker       SGX host), tdx (in a TD
                                          attests itself                 guest), simulated (any
                                                                         machine; protects nothing)
  client     --tee X --master spark://…   the driver here, as in         sgx-gramine or tdx, here
             --deploy-mode client (the    local-tee; each executor's     and on every worker;
             default)                     Python workers attest          simulated for tests
                                          themselves on their hosts
  cluster    --tee X --master k8s://…     driver and executors in TEE    sgx-gramine (SGX device
             --deploy-mode cluster        pods (pod templates from the   plugin), tdx (confidential
                                          --k8s-* options)               containers runtime class),
                                                                         simulated (labelled; warns)

A standalone master (spark://) runs no Python application in cluster deploy mode: use client mode,
or Kubernetes. --tee X needs --policy ID and --attestation-url; --tee simulated also needs
--enclave-manifest and --enclave-sig (from `ppml enclave`).

Options before APP are ppml submit's own (an unknown one is an error); everything after APP goes to
the application, as with spark-submit. Spark settings (--conf, --properties-file and ppml's own,
secrets included) are merged into one 0600 properties file: no value reaches a command line. Spark
logs only warnings unless --verbose.
"""


class _SubmitParser(argparse.ArgumentParser):
    """``ppml submit``'s parser: an unknown option before APP is its own usage error (argparse
    leaves unknown arguments of a subcommand to the top-level parser, whose usage does not
    describe them)."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments before APP: {' '.join(extras)}")
        # What --tee sgx-gramine hands, unchanged, to the same command inside the enclave.
        namespace.submit_argv = list(sys.argv[1:] if args is None else args)
        return namespace, extras


def cmd_jvm_build(args: argparse.Namespace) -> int:
    from ppml.spark.jvm import build_library

    print(build_library(force=args.force))
    return 0


def cmd_jvm_classpath(args: argparse.Namespace) -> int:
    from ppml.spark.jvm import library_jar

    print(library_jar())
    return 0


def add_commands(commands: Any) -> None:
    p = commands.add_parser(
        "submit", help="submit a Spark application (spark-submit with ppml's security and TEE modes)",
        description="Mirror of spark-submit. --tee none runs without a TEE; --tee simulated|sgx-gramine|tdx\n"
        "attests the driver before anything runs, and every Python worker attests itself before it may\n"
        "receive a data key. Secrets go in a 0600 properties file, never on a command line.",
        epilog=MODES, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
    )
    p.__class__ = _SubmitParser  # argparse's add_parser takes no parser class of its own
    spark = p.add_argument_group("spark-submit's options (passed through)")
    spark.add_argument("--master", default="local[2]", help="local[N] (default local[2]), spark://HOST:PORT, "
                       "k8s://https://HOST:PORT")
    spark.add_argument("--deploy-mode", default="client", choices=["client", "cluster"])
    spark.add_argument("--class", dest="main_class", metavar="CLASS", help="main class of a Java/Scala APP (a jar)")
    spark.add_argument("--name", help="application name")
    spark.add_argument("--jars", action="append", metavar="JARS", help="comma-separated jars for the driver and "
                       "executor classpaths (repeatable)")
    spark.add_argument("--packages", metavar="COORDINATES", help="refused: no Maven repository is reachable "
                       "offline; pass the jars with --jars")
    spark.add_argument("--py-files", action="append", metavar="FILES", help="comma-separated .zip, .egg or .py "
                       "files for the Python path (repeatable)")
    spark.add_argument("--files", action="append", metavar="FILES", help="comma-separated files placed in each "
                       "executor's working directory (repeatable)")
    spark.add_argument("--archives", action="append", metavar="ARCHIVES", help="comma-separated archives "
                       "extracted into each executor's working directory (repeatable)")
    spark.add_argument("--conf", "-c", action="append", type=_conf, metavar="NAME=VALUE",
                       help="a Spark setting (repeatable); wins over --properties-file")
    spark.add_argument("--properties-file", metavar="FILE", help="Spark settings to merge (below --conf) into "
                       "ppml's private properties file")
    spark.add_argument("--driver-memory", metavar="MEM", help="e.g. 2g")
    spark.add_argument("--driver-cores", type=_count, metavar="N")
    spark.add_argument("--executor-memory", metavar="MEM", help="e.g. 4g")
    spark.add_argument("--executor-cores", type=_count, metavar="N")
    spark.add_argument("--num-executors", type=_count, metavar="N", help="Kubernetes, YARN")
    spark.add_argument("--total-executor-cores", type=_count, metavar="N", help="standalone")
    spark.add_argument("--verbose", action="store_true", help="Spark's INFO logging and spark-submit's --verbose")
    tee = p.add_argument_group("ppml: TEE and attestation")
    tee.add_argument("--tee", default="none", choices=["none", "simulated", "sgx-gramine", "tdx"],
                     help="the TEE backend (default none; see the modes below)")
    add_attestation_options(tee)
    tee.add_argument("--enclave-app", default=ENCLAVE_APP, metavar="APP",
                     help="--tee sgx-gramine, run outside an enclave: the enclave gramine-sgx starts the driver in "
                     f"(APP.manifest.sgx and APP.sig, from `ppml image context`; default {ENCLAVE_APP}, the "
                     "application image's)")
    cluster = p.add_argument_group("ppml: cluster security and event logs")
    cluster.add_argument("--secret-file", metavar="FILE", help="Spark RPC secret (0600) shared with the cluster")
    cluster.add_argument("--event-log-dir", metavar="DIR", help="write Spark event logs here (ppml history-server)")
    cluster.add_argument("--registration-timeout", type=float, default=60.0, metavar="SECONDS",
                         help="standalone: give up if the driver has not joined the cluster by then")
    k8s = p.add_argument_group("ppml: Kubernetes (--master k8s://…)")
    k8s.add_argument("--k8s-image", metavar="IMAGE", help="the ppml/Spark container image")
    k8s.add_argument("--k8s-namespace", default="default", metavar="NS")
    k8s.add_argument("--k8s-rpc-secret", metavar="SECRET[:KEY]", help="Kubernetes Secret holding the Spark RPC secret")
    k8s.add_argument("--k8s-kms-credentials", metavar="SECRET[:KEY]", help="Kubernetes Secret with the KMS "
                     "credentials")
    k8s.add_argument("--k8s-ca", metavar="CONFIGMAP[:KEY]", help="ConfigMap with the KMS/AS CA certificate")
    k8s.add_argument("--render-only", metavar="DIR", help="write pod templates and properties to DIR and print the "
                     "spark-submit command instead of running it")
    p.add_argument("app", metavar="APP", help="the application: a .py file, or a jar with --class")
    p.add_argument("app_args", nargs=argparse.REMAINDER, metavar="ARGS", help="the application's arguments")
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

    jvm = commands.add_parser("jvm", help="ppml's JVM library (codec, Parquet KmsClient, key agent client)",
                              description="ppml's JVM library for Spark's own readers and JVM applications.")
    jvm_commands = jvm.add_subparsers(dest="jvm_command", metavar="COMMAND", required=True)
    p = jvm_commands.add_parser("build", help="compile it with javac against pyspark's jars (make venv does)",
                                description="Compile jvm/ with javac against pyspark's jars into the package.")
    p.add_argument("--force", action="store_true", help="rebuild even if the sources did not change")
    p.set_defaults(func=cmd_jvm_build)
    p = jvm_commands.add_parser("classpath", help="print the jar's path (for --jars / extraClassPath)",
                                description="Print the path of ppml's JVM library jar, building it if needed.")
    p.set_defaults(func=cmd_jvm_classpath)
