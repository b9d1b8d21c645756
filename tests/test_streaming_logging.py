"""The streaming runtime logs through transformers' logging: `transformers.logging.set_verbosity_*` (and
`TRANSFORMERS_VERBOSITY`) decide which of its messages show, and they show through transformers' handler."""

import logging

import pytest
from transformers.utils import logging as hf_logging

from flash_vstream_hf import StreamingSession
from flash_vstream_hf.streaming import IteratorSource
from flash_vstream_hf.tiny import synthetic_frame

JOIN = 60  # seconds: a deadlock fails the test instead of hanging CI
BAD_FRAME = "bad frame at 1.000 s skipped"  # the warning for the second frame of a 1 fps stream

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Records(logging.Handler):
    """Keeps the messages of the records it is given."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def logged():
    """`(created, shown)`: messages any flash_vstream_hf logger let through, and those that reached transformers'
    root logger (whose handler prints them); transformers' verbosity is restored afterwards."""
    created, shown = Records(), Records()
    package, transformers_root = logging.getLogger("flash_vstream_hf"), hf_logging.get_logger()
    package.addHandler(created)
    transformers_root.addHandler(shown)
    verbosity = hf_logging.get_verbosity()
    yield created.messages, shown.messages
    hf_logging.set_verbosity(verbosity)
    package.removeHandler(created)
    transformers_root.removeHandler(shown)


def stream_with_a_bad_frame(tiny) -> None:
    model, processor = tiny
    frames = [synthetic_frame(0), None, synthetic_frame(1)]
    with StreamingSession(model, processor) as session:
        session.start(IteratorSource(frames))
        assert session.wait(JOIN)
        assert session.status().frames_failed == 1


def test_error_verbosity_silences_the_bad_frame_warning(tiny, logged, capsys):
    created, shown = logged
    hf_logging.set_verbosity_error()
    stream_with_a_bad_frame(tiny)
    assert not any(BAD_FRAME in message for message in created + shown)
    assert BAD_FRAME not in capsys.readouterr().err


def test_info_verbosity_shows_the_bad_frame_warning_through_transformers(tiny, logged):
    _, shown = logged
    hf_logging.set_verbosity_info()
    stream_with_a_bad_frame(tiny)
    assert [message for message in shown if BAD_FRAME in message]
