"""`ppml example ml-pipeline | xgboost | lightgbm` end to end, as a user runs them: attestation
first, gated keys, training in one attested process and scoring in another, the model encrypted
at rest; the held-out metric beats a threshold derived from the generator, and the reloaded model
predicts exactly what the trained one did. Also: xgboost.spark's 2 workers on a standalone cluster
whose executors attest, and a model under a gated key that loads only inside the TEE.

Thresholds. The generator (``ppml.datagen.write_tabular``) draws standard normal features and a
linear signal ``s = x·w``: classification labels are Bernoulli(sigmoid(s)), so no model ranks better
than the true probabilities (the *oracle* AUC, computed here from the same seed); regression labels
are ``s + N(0, sigma²)``, so no model's RMSE beats sigma. LogisticRegression is the generator's own
model family: its AUC must be within 0.01 of the oracle. Tree ensembles approximate the linear
logit by steps: within 0.03 of the oracle at 16,000 training rows. Regressors must explain at
least 95 % of the signal's variance: RMSE <= sqrt(sigma² + 0.05 · var(s)).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from model_checks import assert_no_plaintext
from ppml.datagen import TabularSummary, generate_tabular

ROWS = 20_000
SEED = 7  # the examples' default


def oracle(tmp_path: Path, task: str) -> TabularSummary:
    return generate_tabular(tmp_path / "oracle.csv", ROWS, task=task, seed=SEED)


def run_example(name: str, workdir: Path, *extra: str) -> str:
    result = subprocess.run([sys.executable, "-m", "ppml.cli.main", "example", name, "--workdir", str(workdir),
                             "--rows", str(ROWS), *extra], capture_output=True, text=True, check=False, timeout=600,
                            env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout


def metric(output: str, name: str) -> float:
    """The example's final metric line, in the form the issue names."""
    lines = output.rstrip().splitlines()
    assert re.fullmatch(rf"{name}: \d+\.\d{{4}}", lines[-2]), lines[-3:]
    return float(lines[-2].split()[1])


def check_common(output: str, workdir: Path, *, rows: int = ROWS // 5) -> None:
    assert output.count("| Attestation Success!") == 2, "both stages attest first"
    assert f"reloaded model: {rows:,} predictions identical to the trained model's" in output
    for log in ("train.log", "score.log"):
        assert (workdir / log).read_text().startswith("Attestation Success!")
    for predictions in ("predictions-trained", "predictions"):
        parts = list((workdir / predictions).glob("part-*"))
        assert parts and all(p.read_bytes()[:4] == b"PPML" for p in parts)


@pytest.mark.slow
@pytest.mark.spark
def test_ml_pipeline_example(tmp_path: Path) -> None:
    output = run_example("ml-pipeline", tmp_path / "ex")
    check_common(output, tmp_path / "ex")
    assert "trained LogisticRegressionModel pipeline on 16,000 rows" in output
    assert "loaded the encrypted model: VectorAssembler, StandardScalerModel, LogisticRegressionModel" in output
    assert_no_plaintext(tmp_path / "ex" / "model")
    assert metric(output, "AUC") >= oracle(tmp_path, "classification").oracle - 0.01


# The ml-pipeline example's --task regression end to end (GBTRegressor) took ~110 s of make test's
# budget; what it checked runs elsewhere: a GBTRegressor pipeline on format("ppml") under the same
# RMSE bound (tests/test_ml_spark.py) and the examples' regression wiring with LightGBM below.


@pytest.mark.slow
@pytest.mark.spark
def test_xgboost_example(tmp_path: Path) -> None:
    output = run_example("xgboost", tmp_path / "ex")
    check_common(output, tmp_path / "ex")
    assert "trained SparkXGBClassifier with 2 workers" in output
    assert "loaded the encrypted Booster (100 rounds; no Spark in this process)" in output
    for model in ("spark-model", "booster"):
        assert_no_plaintext(tmp_path / "ex" / "model" / model)
    assert metric(output, "AUC") >= oracle(tmp_path, "classification").oracle - 0.03


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_lightgbm_example(tmp_path: Path, task: str) -> None:
    output = run_example("lightgbm", tmp_path / "ex", "--task", task)
    check_common(output, tmp_path / "ex")
    assert "trained a LightGBM booster (200 rounds) on 16,000 rows" in output
    assert_no_plaintext(tmp_path / "ex" / "model")
    truth = oracle(tmp_path, task)
    if task == "classification":
        assert metric(output, "AUC") >= truth.oracle - 0.03
    else:
        assert metric(output, "RMSE") <= math.sqrt(truth.oracle ** 2 + 0.05 * truth.signal_std ** 2)
    if task == "classification":
        gated_model_loads_only_inside_the_tee(tmp_path / "ex", output)


def gated_model_loads_only_inside_the_tee(workdir: Path, output: str) -> None:
    """The example's model key releases only to its policy: with the app's own credentials outside
    the TEE the KMS refuses the model's data key; the same load under `ppml tee run` succeeds."""
    from ppml.errors import PermissionDenied
    from ppml.kms.registry import open_kms
    from ppml.ml import load
    from servers import KmsServer

    policy = re.search(r"policy_id (\S+)", output)
    assert policy
    platform = workdir / "simulated-platform"
    server = KmsServer(workdir / "kms", extra=["--trust-simulated-platform", str(platform / "platform-public.pem"),
                                               "--no-access-log"])
    try:
        uri = server.uri(credentials=workdir / "app-credentials.json")
        kms = open_kms(uri)
        with pytest.raises(PermissionDenied):
            load(workdir / "model", kms=kms)
        script = textwrap.dedent(f"""
            from ppml.tee.keys import kms_for
            from ppml.ml import load
            booster = load({str(workdir / 'model')!r}, kms=kms_for({uri!r}))
            print("trees", booster.num_trees())
        """)
        enclave = workdir / "enclave"
        result = subprocess.run(
            [sys.executable, "-m", "ppml.cli.main", "tee", "run", "--backend", "simulated", "--policy", policy.group(1),
             "--attestation-url", server.base_url, "--ca", str(server.ca),
             "--enclave-manifest", str(enclave / "lightgbm_example.manifest.toml"),
             "--enclave-sig", str(enclave / "lightgbm_example.sig"),
             "--platform-key", str(platform / "platform-key.pem"),
             "--", sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.splitlines()[0] == "Attestation Success!"
        assert "trees 200" in result.stdout
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.spark
def test_xgboost_example_on_a_standalone_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """xgboost.spark's 2 barrier workers run on a standalone cluster's executor, which started under
    ppml's launcher and attested before its JVM ran; the driver passed the gate."""
    from ppml.cli.ml_examples import run_ml_example
    from ppml.spark.cluster import StandaloneCluster
    from ppml.spark.session import write_secret_file

    secret = tmp_path / "rpc-secret"
    write_secret_file(secret)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    with StandaloneCluster(tmp_path / "cluster", secret_file=secret, worker_memory="2g") as cluster:
        code = run_ml_example("xgboost", workdir=tmp_path / "ex", rows=ROWS, master=cluster.master_url,
                              spark_args=("--secret-file", str(secret), "--executor-memory", "1g"))
    output = capsys.readouterr().out
    assert code == 0, output[-4000:] + (tmp_path / "ex" / "train.log").read_text()[-4000:]
    check_common(output, tmp_path / "ex")
    assert "trained SparkXGBClassifier with 2 workers" in output
    assert metric(output, "AUC") >= oracle(tmp_path, "classification").oracle - 0.03
    executor_logs = [p.read_text(errors="replace") for p in (tmp_path / "cluster").glob("worker-*/app-*/*/stdout")]
    assert executor_logs and all("Attestation Success!" in log for log in executor_logs), executor_logs
    stderr_logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "cluster").glob("worker-*/app-*/*/stderr"))
    assert set(re.findall(r"Task \d+ got rank (\d+)", stderr_logs)) == {"0", "1"}, "both workers ran on the cluster"
