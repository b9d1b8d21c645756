"""Ray plumbing shared by the batch jobs: joining or starting a cluster, sizing an actor pool, and running rows
through it with Ray Data (`map_batches` with a callable class on a fixed `ActorPoolStrategy`), one row per call,
the results handed back as each finishes.

Sizing (`plan_actors`): on a cluster with GPUs, one GPU per actor (`num_gpus=1`), one actor per GPU by default;
otherwise fractional CPUs, so the actors never take every CPU and Ray Data's own read and output tasks still get
one (with whole CPUs on a 2-CPU machine the read task starves and the job never starts). The CPUs an actor gets
also set its torch threads (at least 1).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass

RESERVED_CPUS = 0.5  # left to Ray Data's read and output tasks
MIN_ACTOR_CPUS = 0.05


class RayMissingError(RuntimeError):
    """Ray (the `cluster` extra) is not installed."""


@dataclass(frozen=True)
class ActorPlan:
    """How many model actors, and what each reserves: `num_cpus` (fractional), `num_gpus` (0 or 1); `threads`
    is the torch thread count each uses."""

    actors: int
    num_cpus: float
    num_gpus: int
    threads: int

    def describe(self) -> str:
        each = f"{self.num_gpus} GPU + {self.num_cpus:g} CPU" if self.num_gpus else f"{self.num_cpus:g} CPU"
        return f"{self.actors} actor(s), each {each}, {self.threads} torch thread(s)"


def plan_actors(actors: int | None, resources: dict, work: int | None = None) -> ActorPlan:
    """The actor pool for `actors` (None: one per GPU, else one per 2 CPUs; never more than `work` rows) on a
    cluster with `resources` (`ray.cluster_resources()`); a `ValueError` when the cluster cannot hold that many."""
    cpus, gpus = float(resources.get("CPU", 0)), int(resources.get("GPU", 0))
    if gpus:
        count = actors or gpus
        if count > gpus:
            raise ValueError(f"--actors {count}: the cluster has {gpus} GPU(s) and each actor takes one")
    else:
        count = actors or max(1, int(cpus // 2))
    count = min(count, work) if work else count
    share = math.floor((cpus - RESERVED_CPUS) / count * 100) / 100  # CPUs per actor, rounded down to 0.01
    if share < MIN_ACTOR_CPUS:
        raise ValueError(
            f"--actors {count}: the cluster has {cpus:g} CPU(s), too few for {count} actors and Ray Data's own tasks"
        )
    return ActorPlan(count, share, 1 if gpus else 0, max(1, int(share)))


@contextlib.contextmanager
def ray_cluster(address: str | None) -> Iterator[dict]:
    """Ray, connected for the duration: the cluster at `address`, or a local one started here (and shut down at
    the end). A Ray already initialised in this process (a test, a notebook) is used as it is and left running.
    Yields the cluster's resources."""
    try:
        import ray
    except ImportError as error:
        raise RayMissingError(
            f"Ray is not installed ({error}): install the cluster extra, pip install 'flash-vstream-hf[cluster]'"
        ) from error

    if ray.is_initialized():
        yield ray.cluster_resources()
        return
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield ray.cluster_resources()
    finally:
        ray.shutdown()  # a local cluster stops; a joined one only loses this driver


def map_rows(rows: list[dict], actor_class: type, constructor_kwargs: dict, plan: ActorPlan) -> Iterator[dict]:
    """Run every row through `actor_class(**constructor_kwargs)(batch)` on a pool of `plan.actors` actors, one row
    per call, and yield the result rows in the order they finish. The actor must not raise for one bad row (that
    would end the whole job): it returns the error in its row."""
    import ray

    if not rows:
        return
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows))  # one block per row: any actor takes any
    results = dataset.map_batches(
        actor_class,
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=plan.actors),
        fn_constructor_kwargs={**constructor_kwargs, "threads": plan.threads},
        num_cpus=plan.num_cpus,
        num_gpus=plan.num_gpus or None,
    )
    for row in results.iter_rows():
        yield {key: _plain(value) for key, value in row.items()}


def _plain(value):
    """A numpy scalar from a Ray Data row as the Python value it was."""
    return value.item() if hasattr(value, "item") else value
