"""The real-time runtime: ingest a live or recorded stream in the background and answer questions at any moment.

```python
from flash_vstream_hf.streaming import StreamingSession

with StreamingSession(model, processor) as session:
    session.start("video.mp4", speed=1.0)     # or an RTSP/HTTP URL, /dev/video0, an iterator of frames
    session.wait_for_frames(5)
    answer = session.ask("What is happening?")
    print(answer.text, answer.stream_time, answer.latency)
```
"""

from .answering import Answer, AnswerStream, NoFramesError, StreamSnapshot
from .backlog import FrameBacklog
from .batched_answers import AnswerBatcher, answer_together
from .session import StreamingSession
from .sources import (
    FileSource,
    FrameSource,
    IteratorSource,
    LiveSource,
    StreamClock,
    StreamInterruptedError,
    open_source,
)
from .status import StreamStatus

__all__ = [
    "Answer",
    "AnswerBatcher",
    "AnswerStream",
    "FileSource",
    "FrameBacklog",
    "FrameSource",
    "IteratorSource",
    "LiveSource",
    "NoFramesError",
    "StreamClock",
    "StreamInterruptedError",
    "StreamSnapshot",
    "StreamStatus",
    "StreamingSession",
    "answer_together",
    "open_source",
]
