"""What a log socket keeps while its page is behind: bounded by what is shown, not by what the
agent writes (lines come from Docker in pieces of up to 1 MiB)."""

import asyncio
import collections

from sandboxes.engine.streams import MAX_PIECE, LogLine
from sandboxes.live import logs


def behind_consumer() -> logs.LogConsumer:
    consumer = logs.LogConsumer()
    consumer.closed = False
    consumer.sent, consumer.acked = logs.MAX_UNACKED + 1, 0  # the page is behind
    consumer.skipped, consumer.overflowed, consumer.overflow_told = 0, 0, 0
    consumer.held = collections.deque(maxlen=logs.HELD_LINES)
    consumer.continuing, consumer.resume_after, consumer.last_timestamp = {}, 0, ""
    consumer.pending = collections.deque()
    return consumer


def kept_bytes(items) -> int:
    total = 0
    for item in items:
        text = item.text if isinstance(item, LogLine) else item[2]
        total += len(text.encode() if isinstance(text, str) else text)
    return total


def test_a_page_behind_holds_what_it_would_be_shown_not_megabyte_lines():
    consumer = behind_consumer()
    stamp = "2026-12-07T03:00:00.000000001Z"
    for _ in range(logs.HELD_LINES):  # lines of 1 MiB each, ending in a newline
        consumer.pending.append(LogLine("stdout", stamp, b"x" * MAX_PIECE))
    while consumer.pending:
        batch, _end = consumer._take(500)
        asyncio.run(consumer._flush(batch))
    assert len(consumer.held) == logs.HELD_LINES
    # Each line is shown cut at MAX_LINE characters: that, not 1 MiB, is what may be kept.
    assert kept_bytes(consumer.held) <= logs.HELD_LINES * (logs.MAX_LINE * 4 + 200)


def test_the_reader_queues_lines_cut_to_what_is_shown():
    consumer = behind_consumer()

    class Stream:
        def __iter__(self):
            for _ in range(10):
                yield LogLine("stdout", "2026-12-07T03:00:00Z", b"y" * MAX_PIECE)

    loop = asyncio.new_event_loop()
    try:
        consumer.asleep = False
        consumer._read(Stream(), loop)
    finally:
        loop.close()
    lines = [item for item in consumer.pending if isinstance(item, LogLine)]
    assert len(lines) == 10
    assert kept_bytes(lines) <= 10 * (logs.MAX_LINE * 4 + 1)
    assert logs._line(lines[0])[2].endswith("(the line goes on; download the log for all of it)")
