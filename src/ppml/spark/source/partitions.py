"""What one read task is given: Spark pickles these on the driver and hands one to each task."""

from __future__ import annotations

from pyspark.sql.datasource import InputPartition

from ppml.tabular.parquet import RowGroupSlice
from ppml.tabular.splits import FileSplit

__all__ = ["PpmlParquetPartition", "PpmlPartition"]


class PpmlParquetPartition(InputPartition):
    """One task's input: whole row groups of one or more Parquet files."""

    def __init__(self, *, slices: tuple[RowGroupSlice, ...]) -> None:
        super().__init__(slices)
        self.slices = slices


class PpmlPartition(InputPartition):
    """One task's input: envelope splits (packed from one or more files) or one legacy file."""

    def __init__(
        self, *, splits: tuple[FileSplit, ...] = (), legacy_file: str | None = None
    ) -> None:
        super().__init__((splits, legacy_file))
        self.splits = splits
        self.legacy_file = legacy_file
