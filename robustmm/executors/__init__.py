"""Where extraction and the sweep run: `local` (this machine's processes) or `ray` (a Ray cluster), and shards
(`--shard I/N`) that split the same work between independent jobs on shared storage (SLURM arrays).

Ray is the optional extra `robustmm[ray]`: it is imported only when the executor is `ray`, by `connect_ray`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeVar

from robustmm.errors import UserError

EXECUTORS = ("local", "ray")

Item = TypeVar("Item")


@dataclass(frozen=True)
class Shard:
    """Part `index` of `count`: every `count`-th item of a sorted list, starting at `index`."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        found = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
        if not found or not 0 <= int(found[1]) < int(found[2]):
            raise ValueError(f"{text!r} is not I/N with 0 <= I < N (e.g. 0/4 for the first of four shards)")
        return cls(int(found[1]), int(found[2]))

    def select(self, items: list[Item]) -> list[Item]:
        return items[self.index :: self.count]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def connect_ray(address: str | None):
    """The `ray` module, connected to the cluster at `address`; None: `RAY_ADDRESS`, else a cluster started with
    `ray start` on this machine, else a new local instance sized to the machine. Reuses a connection made before."""
    try:
        import ray
    except ImportError:
        raise UserError("executor 'ray' needs Ray: pip install 'robustmm[ray]'") from None
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=True)
        except ConnectionError as error:
            raise UserError(f"cannot reach the Ray cluster at {address or 'RAY_ADDRESS'}: {error}") from None
    return ray
