"""Start and stop a cluster: the stream hosts, the registry and the Ray Serve gateway, all owned by the calling
process (the driver), so Ray restarts any of them that dies and stopping the driver stops them all.

    driver (`flash-vstream cluster up`)
      |- registry actor          placement, health checks, recovery; persisted to the store
      |- host actor 0..N-1       one model each, up to S streams (StreamingSession + checkpointer)
      `- Serve gateway           stateless HTTP: asks the registry who owns a stream, calls that host
    store (folder / fsspec URL)  streams/<id>/checkpoint.json + memory-<frames>.safetensors, registry.json
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass

from .settings import NAMESPACE, REGISTRY_NAME, ClusterSettings

APP_NAME = "flash-vstream"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: ClusterSettings) -> None:
    """A gateway reachable from other machines requires a token."""
    if not is_loopback(settings.host) and not settings.token:
        raise ValueError(f"--host {settings.host} exposes the API beyond this machine: set --token (a bearer token)")


@dataclass
class RunningCluster:
    settings: ClusterSettings
    registry: object
    hosts: dict
    url: str
    started_ray: bool

    def stop(self) -> None:
        """Close every stream (checkpoints kept), then the gateway and the actors; Ray too if we started it."""
        import ray
        from ray import serve

        for host in self.hosts.values():
            try:
                ray.get(host.close_all.remote(), timeout=60)
            except Exception:  # a dead host has nothing left to close
                pass
        try:
            ray.get(self.registry.stop.remote(), timeout=30)
        except Exception:
            pass
        serve.delete(APP_NAME)
        for actor in [self.registry, *self.hosts.values()]:
            ray.kill(actor, no_restart=True)
        if self.started_ray:
            serve.shutdown()
            ray.shutdown()


def start_cluster(settings: ClusterSettings, address: str | None = None, ray_options: dict | None = None):
    """Start (or join, with `address`) Ray, then the hosts, the registry and the gateway; a `RunningCluster`."""
    import ray
    from ray import serve

    from .gateway_deployment import gateway_app
    from .host import StreamHost
    from .registry import StreamRegistry

    check_exposure(settings)
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address=address, namespace=NAMESPACE, **(ray_options or {}))
    host_class = ray.remote(StreamHost)
    hosts = {}
    for name in settings.host_names:
        hosts[name] = host_class.options(
            name=name, namespace=NAMESPACE, lifetime=None, max_restarts=-1, max_task_retries=0,
            max_concurrency=32, num_cpus=settings.host_cpus, num_gpus=settings.host_gpus,
            resources=settings.host_resources or None,
        ).remote(name, settings)  # fmt: skip
    ray.get([host.ping.remote() for host in hosts.values()])  # every model loaded
    registry = ray.remote(StreamRegistry).options(
        name=REGISTRY_NAME, namespace=NAMESPACE, max_restarts=-1, max_task_retries=0, max_concurrency=32,
        num_cpus=0,
    ).remote(settings)  # fmt: skip
    ray.get(registry.list.remote())
    serve.start(http_options={"host": settings.host, "port": settings.port}, proxy_location="HeadOnly")
    serve.run(gateway_app(settings), name=APP_NAME, route_prefix="/", blocking=False)
    url = f"http://{settings.host}:{settings.port}"
    _wait_until_serving(url)
    return RunningCluster(settings, registry, hosts, url, started_ray)


def _wait_until_serving(url: str, timeout: float = 60.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
