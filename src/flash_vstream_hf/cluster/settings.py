"""What `cluster up` was asked for, as one object every actor gets."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..streaming.url_guard import UrlPolicy

NAMESPACE = "flash-vstream"
REGISTRY_NAME = "flash-vstream-registry"


def host_name(index: int) -> str:
    return f"flash-vstream-host-{index}"


@dataclass(frozen=True)
class ClusterSettings:
    """Args:
    model: `demo`, `tiny` or a checkpoint folder / Hub id, loaded once per host.
    store: checkpoint store (folder or fsspec URL), also where the registry persists itself.
    hosts: stream hosts; streams_per_host: streams one host (one loaded model) owns at most.
    checkpoint_every: K, frames between checkpoints of a stream.
    media_root: the only folder file sources may come from (None: no file sources).
    allow_private_urls / allow_url_hosts: what URL sources may reach besides public addresses.
    token: bearer token the gateway requires (None: none, allowed on loopback only).
    host_cpus / host_gpus: Ray resources of one host actor (a GPU each where there are GPUs).
    """

    model: str = "demo"
    store: str = "flash-vstream-checkpoints"
    hosts: int = 1
    streams_per_host: int = 4
    checkpoint_every: int = 20
    media_root: str | None = None
    allow_private_urls: bool = False
    allow_url_hosts: tuple[str, ...] = ()
    token: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    load_in_4bit: bool = False
    host_cpus: float = 1.0
    host_gpus: float = 0.0
    host_resources: dict = field(default_factory=dict)
    max_new_tokens: int = 64
    push_queue: int = 64  # pushed frames waiting per stream before the API answers 429
    monitor_interval: float = 0.5  # seconds between the registry's health checks of the hosts
    ping_timeout: float = 2.0

    def url_policy(self) -> UrlPolicy:
        return UrlPolicy.from_allow_list(list(self.allow_url_hosts), allow_private=self.allow_private_urls)

    @property
    def host_names(self) -> list[str]:
        return [host_name(index) for index in range(self.hosts)]
