"""Trusted deep learning with PyTorch: encrypted datasets, encrypted checkpoints without pickle,
distributed training on Spark (TorchDistributor), attested model serving. Needs ``ppml[dl]``."""
