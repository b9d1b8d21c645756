"""`StreamRegistry`: which host owns which stream, and the loop that brings streams back when a host dies.

The registry is the one place that decides placement. Every `monitor_interval` it pings every host (in
parallel, each with a timeout). A stream whose host does not answer, or answers as a new incarnation without
the stream (Ray restarted its process), is *recovering*: it is reopened from its last checkpoint on a live host
(its own host if that one is back, else the least loaded), without anyone calling anything. Its record counts
`restarts`, and for a stream that cannot be replayed (a live URL, pushed frames) `frames_lost`: the frames it
had ingested past its checkpoint, plus, for a live URL, the frames sent while it was down.

The records are persisted to the checkpoint store (`registry.json`) on every change, so a registry that Ray
restarts picks up where it was; meanwhile the streams go on on their hosts.
"""

from __future__ import annotations

import threading
import time
import uuid

from transformers.utils import logging

from .errors import ApiError, recovering, unknown_stream
from .settings import NAMESPACE, ClusterSettings
from .store import CheckpointStore
from .streams import StreamSpec, check_stream_id, live_gap_frames

logger = logging.get_logger(__name__)
REGISTRY_KEY = "registry.json"


class StreamRegistry:
    """Args:
    settings: the cluster's settings (store, hosts, timings).
    hosts: name -> Ray actor handle of each stream host.
    """

    def __init__(self, settings: ClusterSettings, hosts: dict | None = None):
        import ray

        self.settings = settings
        self.store = CheckpointStore(settings.store)
        self.hosts = hosts or {name: ray.get_actor(name, namespace=NAMESPACE) for name in settings.host_names}
        saved = self.store.read_json(REGISTRY_KEY) or {}
        self.records: dict[str, dict] = saved.get("streams", {})
        self.alive: dict[str, dict] = {}  # host name -> its last ping
        self.recoveries = 0
        self._recovering: dict[str, object] = {}  # stream id -> the ObjectRef of its reopening
        self._lock = threading.RLock()
        self._stop = threading.Event()
        for record in self.records.values():
            if record["state"] == "open":
                record["last_seen"] = time.time()
        self._monitor = threading.Thread(target=self._monitor_loop, name="registry-monitor", daemon=True)
        self._monitor.start()

    # -- the API's calls ------------------------------------------------------------------------------------------

    def create(self, spec: dict) -> dict:
        """Place a new stream on the least loaded live host and open it there; its record."""
        import ray

        stream_id = spec.get("stream_id") or uuid.uuid4().hex[:12]
        try:
            check_stream_id(stream_id)
        except ValueError as error:
            raise ApiError(422, "stream_id", str(error)) from error
        spec = StreamSpec.from_dict({**spec, "stream_id": stream_id})
        with self._lock:
            if stream_id in self.records:
                raise ApiError(409, "stream_id", f"a stream {stream_id!r} exists; DELETE it first or pick another id")
            host = self._least_loaded()
            self.records[stream_id] = {"spec": spec.to_dict(), "host": host, "state": "opening", "restarts": 0,
                                       "frames_lost": 0, "frames_replayed": 0, "last_frames": 0,
                                       "last_seen": time.time(), "created": time.time()}  # fmt: skip
        try:
            status = ray.get(self.hosts[host].open_stream.remote(spec.to_dict()), timeout=120)
        except BaseException:
            with self._lock:
                del self.records[stream_id]
            raise
        with self._lock:
            self.records[stream_id]["state"] = "open"
            self._persist()
        return self._describe(stream_id, status)

    def locate(self, stream_id: str) -> str:
        """The name of the host that owns `stream_id`; 503 (with Retry-After) while it is being recovered."""
        with self._lock:
            record = self.records.get(stream_id)
            if record is None:
                raise unknown_stream(stream_id)
            if record["state"] != "open":
                raise recovering(stream_id)
            return record["host"]

    def record(self, stream_id: str) -> dict:
        """What the registry knows of the stream: host, state, restarts, frames lost or replayed."""
        with self._lock:
            if stream_id not in self.records:
                raise unknown_stream(stream_id)
            return self._describe(stream_id)

    def list(self) -> list[dict]:
        with self._lock:
            return [self._describe(stream_id) for stream_id in sorted(self.records)]

    def delete(self, stream_id: str) -> None:
        import ray

        with self._lock:
            record = self.records.pop(stream_id, None)
            self._persist()
        if record is None:
            raise unknown_stream(stream_id)
        try:
            ray.get(self.hosts[record["host"]].close_stream.remote(stream_id, True), timeout=60)
        except Exception as error:  # the host is gone: its checkpoints must still go
            logger.warning("closing %s on %s failed (%s); removing its checkpoints", stream_id, record["host"], error)
            self.store.delete(f"streams/{stream_id}")

    def hosts_alive(self) -> dict:
        """Host name -> `{pid, node_id, incarnation, streams}` of the hosts that answered the last ping."""
        with self._lock:
            return {name: {k: v for k, v in ping.items() if k != "streams"} | {"streams": sorted(ping["streams"])}
                    for name, ping in self.alive.items()}  # fmt: skip

    def stop(self) -> None:
        self._stop.set()
        self._monitor.join(10)

    # -- recovery ---------------------------------------------------------------------------------------------------

    def _monitor_loop(self) -> None:
        while not self._stop.wait(self.settings.monitor_interval):
            try:
                self.check_hosts()
            except Exception:
                logger.exception("health check failed")

    def check_hosts(self) -> None:
        """One round: ping every host, note the streams they report, reopen the streams that are gone."""
        import ray

        pings = {name: host.ping.remote() for name, host in self.hosts.items()}
        ready, _ = ray.wait(list(pings.values()), num_returns=len(pings), timeout=self.settings.ping_timeout)
        alive = {}
        for name, ref in pings.items():
            if ref in ready:
                try:
                    alive[name] = ray.get(ref)
                except Exception as error:  # the actor died or is restarting
                    logger.info("host %s is down: %s", name, type(error).__name__)
        with self._lock:
            self.alive = alive
            self._settle_recoveries()
            now = time.time()
            for stream_id, record in self.records.items():
                ping = alive.get(record["host"])
                if ping is not None and stream_id in ping["streams"]:
                    if record["state"] == "open":
                        record["last_frames"] = ping["streams"][stream_id]["frames"]
                        record["last_seen"] = now
                        record["owner"] = {"node_id": ping["node_id"], "pid": ping["pid"]}
                elif record["state"] == "open" and stream_id not in self._recovering:
                    self._recover(stream_id, record, now)

    def _recover(self, stream_id: str, record: dict, now: float) -> None:
        """Reopen `stream_id` from its checkpoint on a live host (lock held; the call is not waited for)."""
        try:
            host = record["host"] if record["host"] in self.alive else self._least_loaded()
        except ApiError:
            return  # no live host with room: try again next round
        logger.warning("stream %s lost its host %s: reopening it on %s", stream_id, record["host"], host)
        record.update(state="recovering", host=host, down_since=record["last_seen"])
        gap = now - record["last_seen"]
        self._recovering[stream_id] = self.hosts[host].open_stream.remote(record["spec"], True, gap)
        self._persist()

    def _settle_recoveries(self) -> None:
        """Account for the reopenings that finished (lock held)."""
        import ray

        for stream_id, ref in list(self._recovering.items()):
            ready, _ = ray.wait([ref], timeout=0)
            if not ready:
                continue
            del self._recovering[stream_id]
            record = self.records.get(stream_id)
            try:
                status = ray.get(ref)
            except Exception as error:
                logger.warning("reopening %s failed (%s): trying again", stream_id, error)
                if record is not None:
                    record["state"] = "open"  # the next round sees it missing and retries
                continue
            if record is None:  # deleted while it was reopened
                self.hosts[status["owner"]["host"]].close_stream.remote(stream_id, True)
                continue
            self._count_loss(record, status)
            self.recoveries += 1
            self._persist()

    def _count_loss(self, record: dict, status: dict) -> None:
        spec = StreamSpec.from_dict(record["spec"])
        resumed = status["resumed_from_frames"] or 0
        behind = max(record["last_frames"] - resumed, 0)
        if spec.replayable:
            record["frames_replayed"] += behind  # read again from the file: nothing is lost
        else:
            gap = live_gap_frames(time.time() - record["down_since"], spec.fps) if spec.kind == "url" else 0
            record["frames_lost"] += behind + gap
        record.update(state="open", restarts=record["restarts"] + 1, last_frames=resumed, last_seen=time.time(),
                      owner={"node_id": status["owner"]["node_id"], "pid": status["owner"]["pid"]})  # fmt: skip

    def _least_loaded(self) -> str:
        """The live host with the fewest streams and room for one more (lock held)."""
        load = {name: 0 for name in (self.alive or self.hosts)}
        for record in self.records.values():
            if record["host"] in load:
                load[record["host"]] += 1
        room = [name for name, count in load.items() if count < self.settings.streams_per_host]
        if not room:
            raise ApiError(503, None, "every live host owns as many streams as it may (--streams-per-host)", 5.0)
        return min(room, key=lambda name: (load[name], name))

    def _describe(self, stream_id: str, status: dict | None = None) -> dict:
        record = self.records[stream_id]
        described = {"stream_id": stream_id, **record["spec"], "host": record["host"], "state": record["state"],
                     "restarts": record["restarts"], "frames_lost": record["frames_lost"],
                     "frames_replayed": record["frames_replayed"], "owner": record.get("owner")}  # fmt: skip
        return described if status is None else {**status, **described, "stream_state": status["state"]}

    def _persist(self) -> None:
        self.store.write_json(REGISTRY_KEY, {"streams": self.records})
