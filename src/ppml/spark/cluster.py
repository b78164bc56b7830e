"""A Spark standalone cluster (one master, N workers) on this machine, from the pyspark wheel.

The wheel has no ``sbin/start-*.sh``; the daemons are started through ``bin/spark-class`` with a
0600 ``--properties-file`` that carries the RPC secret and the encryption settings, so the secret
is in no process's argv or environment. Used by the tests and for trying cluster mode locally.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ppml.spark.launch import spark_home
from ppml.spark.session import read_secret_file, security_conf, write_properties_file

__all__ = ["StandaloneCluster"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StandaloneCluster:
    """Start with :meth:`start`, stop with :meth:`stop`; ``master_url`` is ``spark://127.0.0.1:PORT``."""

    def __init__(self, work_dir: Path, *, secret_file: Path, workers: int = 1, worker_cores: int = 2,
                 worker_memory: str = "2g", network_crypto: bool = True, io_encryption: bool = True,
                 host: str = "127.0.0.1") -> None:
        self.work_dir = work_dir
        self.secret_file = secret_file
        self.workers = workers
        self.worker_cores = worker_cores
        self.worker_memory = worker_memory
        self.network_crypto = network_crypto
        self.io_encryption = io_encryption
        self.host = host
        self.port = _free_port()
        self.ui_port = _free_port()
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def master_url(self) -> str:
        return f"spark://{self.host}:{self.port}"

    def _spark_class(self) -> Path:
        return spark_home() / "bin" / "spark-class"

    def _env(self) -> dict[str, str]:
        return {**os.environ, "SPARK_LOCAL_IP": self.host, "PYSPARK_PYTHON": sys.executable,
                "SPARK_LOG_DIR": str(self.work_dir / "logs"), "SPARK_WORKER_DIR": str(self.work_dir / "work")}

    def start(self, timeout: float = 90.0) -> StandaloneCluster:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        conf = security_conf(secret=read_secret_file(self.secret_file), network_crypto=self.network_crypto,
                             io_encryption=self.io_encryption)
        conf["spark.master.ui.port"] = str(self.ui_port)
        conf["spark.ui.enabled"] = "false"
        properties = write_properties_file(conf, self.work_dir / "cluster.properties")
        spark_class = str(self._spark_class())
        self._launch([spark_class, "org.apache.spark.deploy.master.Master", "--host", self.host, "--port",
                      str(self.port), "--webui-port", str(self.ui_port), "--properties-file", str(properties)],
                     "master")
        self._wait(lambda state: True, timeout, "the master did not start")
        for index in range(self.workers):
            self._launch([spark_class, "org.apache.spark.deploy.worker.Worker", "--host", self.host,
                          "--cores", str(self.worker_cores), "--memory", self.worker_memory,
                          "--webui-port", str(_free_port()), "--properties-file", str(properties),
                          "--work-dir", str(self.work_dir / f"worker-{index}"), self.master_url], f"worker-{index}")
        self._wait(lambda state: sum(1 for w in state.get("workers", []) if w.get("state") == "ALIVE")
                   >= self.workers, timeout, "the workers did not register with the master")
        return self

    def _launch(self, argv: list[str], name: str) -> None:
        log = open(self.work_dir / f"{name}.log", "ab")
        self.processes.append(subprocess.Popen(argv, env=self._env(), stdout=log, stderr=subprocess.STDOUT))
        log.close()

    def state(self) -> dict[str, object]:
        """The master's JSON status; ValueError while what answers on the UI port is not yet it.

        While Jetty is still attaching the master's pages, ``/json/`` can fall through to the HTML
        root page (seen once in CI), and a port picked free beforehand can in principle be taken by
        another process, so the answer counts only if it is JSON naming this master's URL.
        """
        with urllib.request.urlopen(f"http://{self.host}:{self.ui_port}/json/", timeout=5) as response:
            state = json.load(response)
        if not isinstance(state, dict) or state.get("url") != self.master_url:
            raise ValueError(f"the status page on port {self.ui_port} is not this master's")
        return dict(state)

    def _wait(self, ready: object, timeout: float, message: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.processes):
                raise RuntimeError(f"{message}: a daemon exited; see {self.work_dir}/*.log")
            try:
                if ready(self.state()):  # type: ignore[operator]
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{message} within {timeout:.0f} s; see {self.work_dir}/*.log")

    def log(self, name: str) -> str:
        path = self.work_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()

    def __enter__(self) -> StandaloneCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
