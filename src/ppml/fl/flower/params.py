"""SecAgg+ parameters, checked by ppml before any Flower process starts."""

from __future__ import annotations

import dataclasses

from ppml.errors import UsageError

__all__ = ["SecAggPlusParams"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SecAggPlusParams:
    """Flower's ``SecAggPlusWorkflow`` parameters for ``clients`` SuperNodes.

    ``num_shares``: each client's mask keys are Shamir-shared among this many clients (itself
    included); ``threshold``: shares needed to rebuild a dropped client's masks. Flower accepts an
    even ``num_shares`` and then crashes every client with an ``IndexError`` in the share-keys stage
    (its neighbour ring is built for an odd count), so ppml refuses it here. A round survives
    dropouts as long as every remaining client's neighbours keep ``threshold`` shares.

    How exact the aggregate is (Flower's ``secaggplus_mod`` and ``quantize``): client i scales its
    parameters by ``r_i = num_examples_i / max_weight`` (itself rounded to a multiple of
    ``1/quantization_range``), clips them to ``[-clipping_range, clipping_range]`` and rounds them
    stochastically onto a grid of step ``s = 2·clipping_range/quantization_range``; the server
    divides the unmasked sum by ``Σ r_i``. So each parameter of the weighted mean is off by less than
    ``n·(s + max|p|/(2·quantization_range)) · max_weight / Σ num_examples`` (:meth:`error_bound`),
    provided ``max|p| · r_i ≤ clipping_range``. Keep ``max_weight`` near the largest client's
    example count: the bound grows with it.
    """

    clients: int
    num_shares: int
    threshold: int
    clipping_range: float = 8.0
    quantization_range: int = 1 << 22
    modulus_range: int = 1 << 32
    max_weight: float = 1_000.0
    timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.clients < 2:
            raise UsageError("secure aggregation needs at least 2 clients")
        if self.num_shares % 2 == 0:
            raise UsageError(f"SecAgg+ num_shares must be odd, not {self.num_shares} (Flower's share-keys "
                             "stage fails on every client with an even count)")
        if not 3 <= self.num_shares <= self.clients:
            raise UsageError(f"SecAgg+ num_shares must lie in [3, {self.clients}] (the number of clients), "
                             f"not {self.num_shares}")
        if not 2 <= self.threshold < self.num_shares:
            raise UsageError(f"the SecAgg+ threshold must lie in [2, num_shares - 1 = {self.num_shares - 1}], "
                             f"not {self.threshold}")
        if self.clipping_range <= 0 or self.quantization_range <= 1 or self.max_weight <= 0:
            raise UsageError("clipping_range, quantization_range and max_weight must be positive")
        if self.modulus_range & (self.modulus_range - 1) or self.modulus_range > 1 << 32:
            raise UsageError("modulus_range must be a power of two, at most 2**32")
        if self.clients * self.quantization_range >= self.modulus_range:
            raise UsageError(f"{self.clients} clients × quantization_range {self.quantization_range} overflow "
                             f"modulus_range {self.modulus_range}")

    @property
    def tolerated_dropouts(self) -> int:
        """How many clients may vanish after sharing keys with the aggregate still recovered."""
        return self.num_shares - self.threshold

    def error_bound(self, *, total_weight: float, max_abs_value: float) -> float:
        """Bound on |SecAgg+ weighted mean − plain weighted mean| per parameter, for ``n`` clients
        with ``total_weight`` examples in all and parameters within ``max_abs_value``."""
        step = 2 * self.clipping_range / self.quantization_range
        ratio_rounding = max_abs_value / (2 * self.quantization_range)
        return self.clients * (step + ratio_rounding) * self.max_weight / total_weight

    def run_config(self) -> dict[str, int | float]:
        """The Flower run-config entries the ServerApp reads."""
        return {"num-shares": self.num_shares, "threshold": self.threshold, "clipping-range": self.clipping_range,
                "quantization-range": self.quantization_range, "modulus-range": self.modulus_range,
                "max-weight": self.max_weight, "secagg-timeout": self.timeout}
