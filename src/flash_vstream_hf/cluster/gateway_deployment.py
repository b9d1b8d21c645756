"""The gateway as a Ray Serve deployment (kept apart so `gateway.py` imports without Serve)."""

from __future__ import annotations

from ray import serve

from .gateway import RayCluster, build_app
from .settings import ClusterSettings


@serve.deployment(name="gateway", num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=64)
@serve.ingress()
class Gateway:
    def __init__(self, settings: ClusterSettings):
        self.settings = settings

    def __serve_build_asgi_app__(self):
        return build_app(self.settings, RayCluster(self.settings))


def gateway_app(settings: ClusterSettings):
    return Gateway.bind(settings)
