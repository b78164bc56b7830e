"""``ppml example ml-pipeline | xgboost | lightgbm``: trusted ML end to end, each step printed.

generate tabular data with a known signal (offline) and split it → ``ppml serve`` → enroll → enclave
for the example's script → policy → keys: data and model keys that release only to the policy, a
results key → encrypt both splits → ``ppml submit --tee simulated … --stage train`` (attests, trains
on the encrypted split, saves the model encrypted under ``DIR/model``, writes its held-out
predictions encrypted) → ``ppml submit … --stage score`` (a new attested process loads the model
and prints ``AUC: 0.xxxx`` or ``RMSE: x.xxxx``) → decrypt both prediction sets as the data owner and
check the reloaded model predicted exactly what the trained one did.

The TEE is SIMULATED here, as in ``ppml demo``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ppml.cli.deployment import LocalDeployment, Steps, local_deployment, ppml_command

__all__ = ["EXAMPLES", "MlExample", "run_ml_example"]


def tabular_data(path: Path, rows: int, seed: int | None, task: str) -> str:
    """Synthetic rows with a known signal (:func:`ppml.datagen.generate_tabular`)."""
    from ppml.datagen import generate_tabular

    summary = generate_tabular(path, rows, task=task, seed=seed)
    expect = (f"oracle AUC (the true probabilities) {summary.oracle:.4f}" if task == "classification" else
              f"noise sigma {summary.oracle:.4f} (best RMSE), signal std {summary.signal_std:.4f}")
    return f"{rows:,} rows with a known signal ({task}), {summary.features} features; {expect}"


def digits_data(path: Path, rows: int, seed: int | None, task: str) -> str:
    """The 8x8 digit images scikit-learn ships (1,797; no download), in a seeded random order,
    as CSV: ``p0..p63`` (intensity 0-16) and ``label``."""
    import numpy as np
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(labels))[: rows or None]
    with open(path, "w", encoding="utf-8") as f:
        f.write(",".join([*(f"p{i}" for i in range(images.shape[1])), "label"]) + "\n")
        for index in order:
            f.write(",".join(str(int(v)) for v in images[index]) + f",{int(labels[index])}\n")
    return f"scikit-learn's 8x8 digit images: {len(order):,} of 10 classes, 64 pixels each"


@dataclasses.dataclass(frozen=True)
class MlExample:
    name: str
    module: str
    summary: str
    spark_stages: tuple[str, ...]
    """The stages that run Spark; the others run on the driver's node only (single-node ML)."""
    data: Callable[[Path, int, int | None, str], str] = tabular_data
    """Writes the example's CSV (``rows``, ``seed``, ``task``) to the path; says what it wrote."""
    app_args: tuple[str, ...] = ()
    """Arguments the example's script always gets."""

    @property
    def script(self) -> Path:
        import importlib.util

        spec = importlib.util.find_spec(self.module)
        assert spec is not None and spec.origin is not None
        return Path(spec.origin)


EXAMPLES = {example.name: example for example in (
    MlExample("ml-pipeline", "ppml.examples.ml_pipeline",
              "Spark MLlib Pipeline (LogisticRegression / GBTRegressor) on format(\"ppml\")", ("train", "score")),
    MlExample("xgboost", "ppml.examples.xgboost_example",
              "xgboost.spark with 2 workers; the booster scored without Spark", ("train",)),
    MlExample("lightgbm", "ppml.examples.lightgbm_example",
              "LightGBM trained on data decrypted into Arrow inside the TEE", ()),
    MlExample("torch-digits", "ppml.examples.torch_example",
              "a CNN on scikit-learn's 8x8 digits, PyTorch DDP on 2 processes through TorchDistributor", ("train",),
              data=digits_data, app_args=("--kind", "digits")),
    MlExample("torch-tabular", "ppml.examples.torch_example",
              "an MLP on synthetic tabular data, PyTorch DDP on 2 processes through TorchDistributor", ("train",),
              app_args=("--kind", "tabular", "--epochs", "5")),
)}

METRICS = ("AUC:", "RMSE:", "accuracy:")
"""How the score stages print their held-out metric."""

TEST_SHARE = 0.2
"""The last fifth of the generated rows is the held-out split."""


def split(source: Path, train: Path, test: Path) -> tuple[int, int]:
    """Write ``source``'s rows into ``train`` and ``test`` with an ``id`` column (the row number)."""
    with open(source, encoding="utf-8") as f:
        header = f.readline()
        lines = f.readlines()
    cut = len(lines) - int(len(lines) * TEST_SHARE)
    for path, first, rows in ((train, 0, lines[:cut]), (test, cut, lines[cut:])):
        with open(path, "w", encoding="utf-8") as out:
            out.write("id," + header)
            out.writelines(f"{first + i},{line}" for i, line in enumerate(rows))
    return cut, len(lines) - cut


def read_predictions(directory: Path, deployment: LocalDeployment) -> dict[int, float]:
    """``id → score`` of an encrypted predictions directory, decrypted as the data owner."""
    from ppml.kms.registry import open_kms
    from ppml.tabular.tables import read_csv_table

    kms = open_kms(deployment.kms_uri)
    try:
        table = read_csv_table(directory, kms=kms)
    finally:
        close = getattr(kms, "close", None)
        if close is not None:
            close()
    return dict(zip(table.column("id").to_pylist(), np.asarray(table.column("score"), dtype=np.float64).tolist(),
                    strict=True))


def run_ml_example(name: str, *, workdir: Path, rows: int, seed: int | None = 7, task: str = "classification",
                   master: str = "local[2]", spark_args: tuple[str, ...] = ()) -> int:
    """Run example ``name`` end to end under ``workdir``; 0 when the reloaded model predicted
    exactly what the trained one did. ``master``/``spark_args`` go to the ``ppml submit`` of each stage
    that runs Spark; the others run locally."""
    example = EXAMPLES[name]
    workdir = workdir.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    steps = Steps()
    print(f"ppml example {name} ({example.summary}) in {workdir}")
    print("NOTE: the TEE here is SIMULATED (no SGX/TDX): every step and check is real, but no hardware protects "
          "data in use.\n")
    generated, train, test = workdir / "data.csv", workdir / "train.csv", workdir / "test.csv"

    def generate() -> str:
        described = example.data(generated, rows, seed, task)
        train_rows, test_rows = split(generated, train, test)
        generated.unlink()
        return f"{train_rows:,} training and {test_rows:,} held-out rows; {described}"

    steps.run("generate the data and split it", generate, str)
    with local_deployment(workdir, steps, entrypoint=example.script) as deployment:
        env, kms_uri = deployment.env, deployment.kms_uri
        data_key, model_key, results_key = steps.run(
            "create primary keys: data and model (release policy), results",
            lambda: (deployment.create_key(f"{name} data (releases to the policy only)", gated=True),
                     deployment.create_key(f"{name} models (releases to the policy only)", gated=True),
                     deployment.create_key(f"{name} predictions", gated=False)),
            lambda k: f"{k[0]}, {k[1]} (gated), {k[2]}")
        def encrypt() -> str:
            for plain in (train, test):
                ppml_command("encrypt", str(plain), f"{plain}.ppml", "--key", data_key, "--kms", kms_uri, "--force",
                             env=env)
            return ", ".join(f"{p.name}.ppml ({Path(f'{p}.ppml').stat().st_size:,} bytes)" for p in (train, test))

        steps.run("encrypt both splits (ppml envelopes under the data key)", encrypt, str)
        model, trained, reloaded = workdir / "model", workdir / "predictions-trained", workdir / "predictions"
        common = [*example.app_args, "--task", task, "--test", f"{test}.ppml", "--model", str(model), "--kms", kms_uri,
                  "--modelKey", model_key, "--outputKey", results_key]

        def stage(stage_name: str, predictions: Path, *extra: str) -> list[str]:
            spark = stage_name in example.spark_stages
            result = deployment.submit(
                [str(example.script), "--stage", stage_name, *common, "--predictions", str(predictions), *extra],
                name=f"{name} {stage_name}", log=workdir / f"{stage_name}.log",
                master=master if spark else "local[2]", extra=spark_args if spark else ())
            shown = [line for line in result.stdout.splitlines()
                     if line.startswith(("Attestation", "trained", "saved", "loaded", "wrote", *METRICS))]
            for line in shown:
                print(f"     | {line}")
            if result.returncode != 0:
                raise SystemExit(f"the {stage_name} stage failed (exit {result.returncode}); see "
                                 f"{workdir / (stage_name + '.log')}")
            return shown

        steps.run("train in the TEE (ppml submit --tee simulated): save the model encrypted, predict the held-out rows",
                  lambda: stage("train", trained, "--train", f"{train}.ppml"), lambda _: f"model in {model.name}/")
        shown = steps.run("reload the model in a new attested process and score the held-out rows",
                          lambda: stage("score", reloaded), lambda _: "metric below")
        compared = steps.run("decrypt both prediction sets (as the data owner) and compare",
                             lambda: (read_predictions(trained, deployment), read_predictions(reloaded, deployment)),
                             lambda p: f"{len(p[0]):,} and {len(p[1]):,} predictions")

    first, second = compared
    metric = next(line for line in shown if line.startswith(METRICS))
    if first != second:
        differing = sum(1 for key in first.keys() | second.keys() if first.get(key) != second.get(key))
        print(f"FAILED: the reloaded model predicted differently on {differing} of {len(first)} rows")
        return 1
    print(f"\nreloaded model: {len(second):,} predictions identical to the trained model's")
    print(metric)
    print(f"({steps.elapsed:.1f} s in all; the encrypted model is in {model})")
    return 0
