"""Streams outlive what dies under them, on a real two-node Ray cluster (one host per node): the owner's process
killed, its whole node removed without grace, the registry killed. Each time the stream answers again without
anyone calling anything; a file stream ends with the memory an uninterrupted run makes (bit for bit), a pushed
stream counts the frames it lost (at most K)."""

from __future__ import annotations

import os
import signal

import httpx
import pytest
import ray

from flash_vstream_hf import FlashVStreamMemory, StreamingSession
from flash_vstream_hf.cluster.checkpoints import memory_from_bytes
from flash_vstream_hf.cluster.runtime import start_cluster
from flash_vstream_hf.cluster.settings import ClusterSettings
from flash_vstream_hf.streaming import FileSource
from flash_vstream_hf.synthetic.checkpoint import demo_model
from flash_vstream_hf.tiny import synthetic_frame, write_synthetic_video

from .cluster_helpers import free_port, two_node_cluster, wait_for
from .helpers import assert_same_memory, png

K = 5  # frames between checkpoints
FRAMES = 60
SPEED = 6.0  # the file plays at 6x real time: ~10 s, long enough to kill its owner half way


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    write_synthetic_video(folder / "walk.mp4", num_frames=FRAMES, fps=1)
    return folder


@pytest.fixture(scope="module")
def uninterrupted(media) -> FlashVStreamMemory:
    """The memory one process makes from the whole file, as the reference."""
    model, processor = demo_model()
    with StreamingSession(model, processor) as session:
        session.start(FileSource(media / "walk.mp4", fps=1.0))
        assert session.wait(120)
        return session.snapshot().memory


@pytest.fixture(scope="module")
def running(media, tmp_path_factory):
    with two_node_cluster() as (cluster, worker):
        settings = ClusterSettings(
            model="demo", store=str(tmp_path_factory.mktemp("store")), hosts=2, streams_per_host=6,
            checkpoint_every=K, media_root=str(media), port=free_port(), host_cpus=0.25,
            host_resources={"stream_host": 1}, control_resources={"control": 0.01}, monitor_interval=0.3,
            ping_timeout=1.5,
        )  # fmt: skip
        runtime = start_cluster(settings)
        with httpx.Client(base_url=runtime.url, timeout=120) as client:
            yield cluster, worker, runtime, client
        runtime.stop()


def stream(client, stream_id: str) -> dict:
    response = client.get(f"/v1/streams/{stream_id}")
    return response.json() if response.status_code == 200 else {}


def memory_of(client, stream_id: str) -> FlashVStreamMemory:
    response = client.get(f"/v1/streams/{stream_id}/memory")
    assert response.status_code == 200, response.text
    return memory_from_bytes(response.content, FlashVStreamMemory)


def ask_through_an_outage(client, stream_id: str) -> list[httpx.Response]:
    """Ask until an answer comes; every refusal before it."""
    refusals = []

    def answered():
        response = client.post(f"/v1/streams/{stream_id}/ask", json={"question": "how many shapes are there now"})
        if response.status_code != 200:
            refusals.append(response)
        return response.status_code == 200

    wait_for(answered, timeout=120, interval=0.1, what=f"an answer about {stream_id}")
    return refusals


def assert_told_to_retry(refusals: list[httpx.Response]) -> None:
    for response in refusals:
        assert response.status_code == 503, response.text
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["error"]["message"]


def test_a_killed_owner_process_is_replaced_and_the_file_stream_ends_as_if_nothing_happened(running, uninterrupted):
    _, _, _, client = running
    created = client.post("/v1/streams", json={"source": "walk.mp4", "stream_id": "pid", "speed": SPEED})
    assert created.status_code == 201, created.text
    before = wait_for(lambda: (s := stream(client, "pid")).get("frames_seen", 0) >= 20 and s, what="20 frames")
    assert 20 <= before["frames_seen"] < FRAMES  # killed half way

    os.kill(before["owner"]["pid"], signal.SIGKILL)
    assert_told_to_retry(ask_through_an_outage(client, "pid"))

    after = wait_for(lambda: (s := stream(client, "pid")).get("stream_state") == "finished" and s, what="the end")
    assert after["restarts"] == 1 and after["owner"]["pid"] != before["owner"]["pid"]
    assert 0 <= after["frames_replayed"] <= K and after["frames_lost"] == 0
    assert after["resumed_from_frames"] % K == 0 and after["resumed_from_frames"] >= before["frames_seen"] - K
    assert_same_memory(memory_of(client, "pid"), uninterrupted)


def test_a_removed_node_moves_its_streams_to_the_live_one(running, uninterrupted):
    cluster, worker, runtime, client = running
    worker_node = worker.node_id
    # Least-loaded placement puts at least one of these on each host (one per node), once the registry sees both
    # hosts alive: a host the previous test killed may still be restarting, and then every stream goes to the other.
    def hosts_on_both_nodes() -> bool:
        alive = ray.get(runtime.registry.hosts_alive.remote())
        return len(alive) == 2 and worker_node in {host["node_id"] for host in alive.values()}

    wait_for(hosts_on_both_nodes, what="both hosts alive")
    files = ("node-a", "node-b", "node-c")
    for stream_id in files:
        body = {"source": "walk.mp4", "stream_id": stream_id, "speed": SPEED}
        assert client.post("/v1/streams", json=body).status_code == 201
    pushed = client.post("/v1/streams", json={"stream_id": "pushed"})
    assert pushed.status_code == 201, pushed.text
    owners = {sid: wait_for(lambda sid=sid: stream(client, sid).get("owner"), what="an owner") for sid in
              (*files, "pushed")}  # fmt: skip
    doomed = next(sid for sid in files if owners[sid]["node_id"] == worker_node)
    frames = [{"image": png(synthetic_frame(i)), "timestamp": float(i)} for i in range(13)]
    assert client.post("/v1/streams/pushed/frames", json={"frames": frames}).status_code == 200
    wait_for(lambda: stream(client, "pushed").get("frames_seen") == 13, what="13 pushed frames")
    pushed_on_worker = owners["pushed"]["node_id"] == worker_node
    wait_for(lambda: stream(client, doomed).get("frames_seen", 0) >= 15, what="15 frames")

    cluster.remove_node(worker, allow_graceful=False)
    assert_told_to_retry(ask_through_an_outage(client, doomed))

    after = wait_for(lambda: (s := stream(client, doomed)).get("stream_state") == "finished" and s, what="the end")
    assert after["owner"]["node_id"] != worker_node and after["restarts"] == 1
    assert_same_memory(memory_of(client, doomed), uninterrupted)
    if pushed_on_worker:  # its frames since the last checkpoint (10) are gone, and counted
        recovered = wait_for(lambda: (s := stream(client, "pushed")).get("restarts") == 1 and s, what="recovery")
        assert recovered["frames_seen"] == 10 and recovered["frames_lost"] == 3
    else:
        assert stream(client, "pushed")["restarts"] == 0


def test_a_killed_registry_comes_back_with_every_stream(running):
    _, _, runtime, client = running
    listed = {s["stream_id"]: s for s in client.get("/v1/streams").json()["streams"]}
    ray.kill(runtime.registry, no_restart=False)
    refusals = []

    def listing():
        response = client.get("/v1/streams")
        if response.status_code != 200:
            refusals.append(response)
        return response.status_code == 200 and response.json()["streams"]

    relisted = {s["stream_id"]: s for s in wait_for(listing, what="the registry back")}
    assert_told_to_retry(refusals)
    assert relisted.keys() == listed.keys()
    for stream_id, record in listed.items():
        assert relisted[stream_id]["restarts"] == record["restarts"]  # the streams themselves never stopped
    assert not ask_through_an_outage(client, "pid")
