"""The cluster's HTTP API through Ray Serve, with real clients (httpx and the `openai` package): streams created,
listed, asked, pushed to, downloaded and deleted; JSON errors naming the field; the bearer token on every call."""

from __future__ import annotations

import httpx
import openai
import pytest

from flash_vstream_hf import FlashVStreamMemory
from flash_vstream_hf.cluster.checkpoints import memory_from_bytes
from flash_vstream_hf.cluster.runtime import check_exposure, start_cluster
from flash_vstream_hf.cluster.settings import ClusterSettings
from flash_vstream_hf.tiny import synthetic_frame, write_synthetic_video

from .cluster_helpers import free_port, local_ray, wait_for
from .helpers import png

TOKEN = "test-token"
QUESTION = "how many shapes are there now"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    media = tmp_path_factory.mktemp("media")
    write_synthetic_video(media / "walk.mp4", num_frames=20, fps=1)
    settings = ClusterSettings(model="demo", store=str(tmp_path_factory.mktemp("store")), hosts=1,
                               streams_per_host=3, media_root=str(media), port=free_port(), host_cpus=0.5,
                               token=TOKEN, max_new_tokens=4)  # fmt: skip
    with local_ray():
        runtime = start_cluster(settings)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=runtime.url, timeout=120, headers=headers) as client:
            yield runtime, client
        runtime.stop()


def test_a_file_stream_is_created_asked_downloaded_and_deleted(api):
    _, client = api
    created = client.post("/v1/streams", json={"source": "walk.mp4", "stream_id": "walk"})
    assert created.status_code == 201 and created.json()["stream_id"] == "walk"
    done = wait_for(lambda: (s := client.get("/v1/streams/walk").json()).get("stream_state") == "finished" and s)
    assert done["frames_seen"] == 20 and done["owner"]["pid"] > 0 and done["restarts"] == 0
    answer = client.post("/v1/streams/walk/ask", json={"question": QUESTION, "max_new_tokens": 3}).json()
    assert answer["frames_seen"] == 20 and answer["stream_time"] == 19.0 and answer["answer"]
    memory = memory_from_bytes(client.get("/v1/streams/walk/memory").content, FlashVStreamMemory)
    assert memory.frames_seen == 20
    assert [s["stream_id"] for s in client.get("/v1/streams").json()["streams"]] == ["walk"]
    assert client.post("/v1/streams", json={"source": "walk.mp4", "stream_id": "walk"}).status_code == 409
    assert client.delete("/v1/streams/walk").status_code == 204
    assert client.get("/v1/streams/walk").status_code == 404


def test_the_openai_client_asks_about_a_pushed_stream_plain_and_streamed(api):
    runtime, client = api
    assert client.post("/v1/streams", json={"stream_id": "cam"}).status_code == 201
    frames = [{"image": png(synthetic_frame(i)), "timestamp": float(i)} for i in range(5)]
    assert client.post("/v1/streams/cam/frames", json={"frames": frames}).json()["accepted"] == 5
    wait_for(lambda: client.get("/v1/streams/cam").json()["frames_seen"] == 5)
    direct = client.post("/v1/streams/cam/ask", json={"question": QUESTION}).json()["answer"]

    chat = openai.OpenAI(base_url=f"{runtime.url}/v1", api_key=TOKEN)
    messages = [{"role": "user", "content": QUESTION}]
    reply = chat.chat.completions.create(model="demo", messages=messages, extra_body={"stream_id": "cam"})
    assert reply.choices[0].message.content == direct
    pieces = chat.chat.completions.create(model="demo", messages=messages, stream=True, extra_body={"stream_id": "cam"})
    chunks = list(pieces)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == direct
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    with pytest.raises(openai.NotFoundError):
        chat.chat.completions.create(model="demo", messages=messages, extra_body={"stream_id": "nope"})
    client.delete("/v1/streams/cam")


@pytest.mark.parametrize(
    "path, body, status, field",
    [
        ("/v1/streams", {"source": "/etc/passwd"}, 403, "source"),
        ("/v1/streams", {"source": "walk.mp4", "fps": 0}, 422, "fps"),
        ("/v1/streams", {"source": "walk.mp4", "colour": "red"}, 422, "colour"),
        ("/v1/streams", {"source": "http://127.0.0.1:9/x.mp4"}, 400, "source"),
        ("/v1/streams/nope/ask", {"question": QUESTION}, 404, "stream_id"),
        ("/v1/streams/nope/ask", {"question": " "}, 422, "question"),
        ("/v1/streams/nope/frames", {"frames": [{"image": "%%", "timestamp": 1}]}, 422, "frames[0].image"),
        ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, 422, "stream_id"),
        ("/v1/chat/completions", {"model": "m", "stream_id": "x", "temperature": 0.7,
                                  "messages": [{"role": "user", "content": "hi"}]}, 422, "temperature"),
    ],
)  # fmt: skip
def test_bad_requests_get_a_json_error_naming_the_field(api, path, body, status, field):
    _, client = api
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["field"] == field


def test_every_call_needs_the_token_and_bodies_are_capped(api):
    runtime, client = api
    with httpx.Client(base_url=runtime.url, timeout=30) as stranger:
        for method, path in (("GET", "/v1/streams"), ("POST", "/v1/streams"), ("GET", "/v1/streams/x/memory")):
            response = stranger.request(method, path, json={})
            assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert stranger.get("/v1/streams", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert stranger.get("/openapi.json").json()["paths"]["/v1/chat/completions"]
    huge = client.post("/v1/streams/x/frames", content=b"x" * (33 * 2**20), headers={"content-type": "application/json"})
    assert huge.status_code == 413


def test_exposing_the_api_beyond_loopback_needs_a_token():
    with pytest.raises(ValueError, match="--token"):
        check_exposure(ClusterSettings(host="0.0.0.0"))
    check_exposure(ClusterSettings(host="0.0.0.0", token="t"))
    check_exposure(ClusterSettings())  # loopback by default
