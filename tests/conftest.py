import logging
import os

# Ray reads this when it is imported: a two-node test cluster on one host (tests/cluster_helpers.py) needs it.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import pytest  # noqa: E402
import torch  # noqa: E402

from flash_vstream_hf.tiny import tiny_config, tiny_model, tiny_processor, write_synthetic_video  # noqa: E402

from .helpers import http_server  # noqa: E402


@pytest.fixture(scope="session")
def config():
    return tiny_config()


@pytest.fixture(scope="session")
def model(config):
    return tiny_model(config)


@pytest.fixture(scope="session")
def processor(config):
    return tiny_processor(config)


@pytest.fixture(scope="session")
def tiny(model, processor):
    """`(model, processor)`: the tiny model that `--model tiny` builds too (same config, same seed)."""
    return model, processor


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A folder holding `tiny_model().save_pretrained()`."""
    path = tmp_path_factory.mktemp("tiny")
    tiny_model().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def media(tmp_path_factory):
    """Videos to serve or point playlists at: `clip.mp4` (20 frames at 5 fps) and `clip.ts` (10 frames, MPEG-TS)."""
    from .test_faults_video import encode

    folder = tmp_path_factory.mktemp("media")
    write_synthetic_video(folder / "clip.mp4", num_frames=20, fps=5.0)
    encode(folder / "clip.ts", indices=range(10), fps=5, format="mpegts")
    return folder


@pytest.fixture
def server(media):
    """`media` on a loopback HTTP server that records the requests it gets (`tests/helpers.py`, `http_server`)."""
    running = http_server(media)
    with running:
        yield running


@pytest.fixture
def frames(config):
    """A function returning `count` random preprocessed frames `[batch, count, 3, H, W]`."""
    size = config.vision_config.image_size

    def make(count: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(batch, count, 3, size, size, generator=generator)

    return make


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules whose tests run background threads: the ingest thread and the askers already use both cores,
    and torch's own thread pool on top of them makes the tiny model's many small ops wait on each other (10-20x
    slower on a busy 2-core machine). Use with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class _DeprecationRecorder(logging.Handler):
    """Collects what transformers logs about deprecated usage (it logs most deprecations instead of warning)."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "deprecat" in message.lower():
            self.messages.append(message)


@pytest.fixture(autouse=True)
def no_transformers_deprecations(request):
    """Fail a test in which transformers reports a deprecated usage, so this project's code keeps to the current
    API of the installed release. Tests that use an old name on purpose carry `@pytest.mark.legacy_api`."""
    recorder = _DeprecationRecorder()
    logger = logging.getLogger("transformers")
    logger.addHandler(recorder)
    try:
        yield
    finally:
        logger.removeHandler(recorder)
    if recorder.messages and request.node.get_closest_marker("legacy_api") is None:
        pytest.fail(f"transformers reported deprecated usage: {recorder.messages}")
