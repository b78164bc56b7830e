"""PyTorch on encrypted data: distributed data-parallel training through Spark's TorchDistributor
(``--num-processes`` ranks, 2 by default: torchrun beside the driver in local mode, barrier tasks on
the executors of a cluster), an encrypted checkpoint (safetensors + JSON in a ppml envelope, never
pickled), reloaded without Spark in a new process to score the held-out split. ``--kind digits``: a
small CNN on scikit-learn's 8x8 digits, prints ``accuracy: 0.xxxx``; ``--kind tabular``: an MLP on
the ML examples' synthetic data, prints ``AUC: 0.xxxx``. Stages and arguments:
:mod:`ppml.examples.tabular_job`; training: :mod:`ppml.examples.torch_training`.

    ppml submit --tee simulated … ppml/examples/torch_example.py --kind digits --stage train \\
        --train train.csv.ppml --test test.csv.ppml --model model --predictions predictions-trained \\
        --kms URI --modelKey K1 --outputKey K2
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ppml.examples.tabular_job import Timer, parse_args
from ppml.examples.torch_training import (
    TrainConfig,
    build_model,
    load_split,
    predict,
    train_worker,
    write_predictions,
)

CHECKPOINT = "checkpoint.ppml"
"""The encrypted checkpoint's name under ``--model``."""


def train(args: Any, kms: Any) -> None:
    from pyspark.ml.torch.distributor import TorchDistributor

    from ppml.spark.session import secure_session

    spark = secure_session(f"torch-{args.kind} train", master=args.master)
    try:
        local = spark.sparkContext.master.startswith("local")
        Path(args.model).mkdir(parents=True, exist_ok=True)
        config = TrainConfig(kind=args.kind, train=args.train, kms=args.kms, model_key=args.modelKey,
                             checkpoint=str(Path(args.model, CHECKPOINT)), features=args.features,
                             epochs=args.epochs, learning_rate=args.learning_rate, seed=args.seed, test=args.test,
                             predictions=args.predictions, output_key=args.outputKey)
        timer = Timer()
        result = TorchDistributor(num_processes=args.num_processes, local_mode=local, use_gpu=False).run(
            train_worker, config)
        if result is None:
            raise RuntimeError("TorchDistributor returned no result")
        print(f"trained with TorchDistributor on {result['world']} processes ({'local' if local else 'cluster'} "
              f"mode), {args.epochs} epochs in {timer}; last loss {result['losses'][-1]:.4f}", flush=True)
        print(f"saved the checkpoint encrypted: {config.checkpoint}", flush=True)
        print(f"wrote {args.predictions} (rank 0, the trained model)", flush=True)
        print(result["metric"], flush=True)
    finally:
        spark.stop()


def score(args: Any, kms: Any) -> None:
    """Load the encrypted checkpoint into a fresh model and score the held-out split (no Spark)."""
    import ppml.torch.checkpoint as checkpoint

    state = checkpoint.load(Path(args.model, CHECKPOINT), kms=kms)
    model = build_model(args.kind, args.features)
    model.load_state_dict(state["model"])
    print(f"loaded the encrypted checkpoint: epoch {state['epoch']}, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters", flush=True)
    ids, inputs, labels = load_split(args.test, kms, args.kind, args.features)
    metric = write_predictions(ids, labels, predict(model, args.kind, inputs), args.kind, path=args.predictions,
                               kms=kms, key_id=args.outputKey)
    print(f"wrote {len(ids):,} encrypted predictions: {args.predictions}", flush=True)
    print(metric, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__.split("\n\n")[0], argv, extra=[
        ("--kind", {"choices": ["digits", "tabular"], "default": "digits"}),
        ("--epochs", {"type": int, "default": 30}),
        ("--learning-rate", {"type": float, "default": 3e-3}),
        ("--num-processes", {"type": int, "default": 2, "help": "TorchDistributor's processes (DDP ranks)"}),
        ("--seed", {"type": int, "default": 1}),
    ])
    from ppml.tee.keys import kms_for

    if args.kind == "digits":
        args.features = 64
    kms = kms_for(args.kms)
    (train if args.stage == "train" else score)(args, kms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
