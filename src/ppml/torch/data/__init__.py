"""Encrypted datasets for PyTorch: map-style and iterable datasets over ppml files (tabular csv,
json lines, text and PME Parquet; NumPy arrays; raw records), decrypted segment by segment in
bounded memory, sharded across DataLoader workers and distributed ranks by segment ranges (or
Parquet row groups), with keys through the KMS of each process (the TEE's key agent or attested
session). The manual is docs/torch.md.
"""

try:
    from ppml.tabular.parse import CsvOptions
    from ppml.torch.data.arrays import ArrayDataset, IterableArrayDataset
    from ppml.torch.data.cache import CacheInfo
    from ppml.torch.data.layouts import RecordWriter, save_array, write_records
    from ppml.torch.data.records import IterableRecordDataset, RecordDataset
    from ppml.torch.data.tables import IterableTableDataset, TableDataset
except ImportError as exc:  # pragma: no cover - depends on the installation
    if (exc.name or "").partition(".")[0] == "ppml":
        raise
    raise ImportError(f"ppml.torch.data needs `pip install ppml[dl]` ({exc})") from exc

__all__ = [
    "ArrayDataset",
    "CacheInfo",
    "CsvOptions",
    "IterableArrayDataset",
    "IterableRecordDataset",
    "IterableTableDataset",
    "RecordDataset",
    "RecordWriter",
    "TableDataset",
    "save_array",
    "write_records",
]
