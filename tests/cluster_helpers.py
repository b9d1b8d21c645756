"""A real Ray cluster for the cluster tests: one local node, or a two-node `ray.cluster_utils.Cluster` on
127.0.0.1 (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, which conftest.py sets before Ray is imported), with the stream
runtime started on it; everything Ray started is shut down by its handle at the end."""

from __future__ import annotations

import contextlib
import socket
import time

# Fast failure detection, so that a removed node is declared dead in ~2 s instead of ~18 s.
FAST_HEALTH_CHECKS = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_timeout_ms": 500,
    "health_check_failure_threshold": 3,
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def two_node_cluster():
    """`(cluster, worker_node)`: a head with one CPU and a worker with one, each with one `stream_host` slot; the
    head also holds the `control` resource that pins the registry and the gateway to it."""
    import ray
    from ray.cluster_utils import Cluster

    from flash_vstream_hf.cluster.settings import NAMESPACE

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1", "resources": {"stream_host": 1, "control": 1},
                        "include_dashboard": False, "_system_config": FAST_HEALTH_CHECKS},
    )  # fmt: skip
    worker = cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", resources={"stream_host": 1})
    try:
        ray.init(address=cluster.address, namespace=NAMESPACE)
        yield cluster, worker
    finally:
        with contextlib.suppress(Exception):
            from ray import serve

            serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


@contextlib.contextmanager
def local_ray():
    import ray

    from flash_vstream_hf.cluster.settings import NAMESPACE

    ray.init(num_cpus=2, namespace=NAMESPACE, include_dashboard=False)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            from ray import serve

            serve.shutdown()
        ray.shutdown()


def wait_for(condition, timeout: float = 90.0, interval: float = 0.2, what: str = "condition"):
    """Poll `condition()` until it returns something truthy (returned), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(interval)
