"""The bounds a mask-stream reader applies to every message, in one place.

``docs/protocol.md`` (section "Limits a reader applies") states the same numbers; a test
keeps the two in agreement. Everything a sender controls is checked against these before
memory is allocated for it, so one hostile message costs at most about
``max_message_bytes`` plus ``max_pixels`` x 3 bytes and is then counted as malformed.
"""

from __future__ import annotations

from dataclasses import dataclass

# Largest value of a counter or of an integer header field: the wire carries 64-bit
# counters (seq, frame_id, timestamps in ns); Python ints above this are refused.
MAX_WIRE_INT = (1 << 63) - 1


@dataclass(frozen=True)
class SubscriberLimits:
    """Per-message bounds of :class:`~segcam.publish.subscriber.MaskSubscriber` and
    :func:`segcam.publish.protocol.decode`.

    The defaults accept everything segcam itself can publish (masks and frames up to 8K,
    7680 x 4320) and refuse more.
    """

    max_message_bytes: int = 64 * 1024 * 1024  # ZMQ_MAXMSGSIZE: libzmq drops larger frames
    max_header_bytes: int = 64 * 1024
    max_telemetry_bytes: int = 1024 * 1024
    max_side: int = 16384  # width or height, in pixels
    max_pixels: int = 1 << 25  # width * height per message (32 Mi: an 8K frame fits)
    max_int_digits: int = 20  # digits of an integer in a JSON header or telemetry
    max_jpeg_scans: int = 64  # scans of a frame JPEG (baseline 1, progressive about 10)

    def __post_init__(self) -> None:
        for name in (
            "max_message_bytes",
            "max_header_bytes",
            "max_telemetry_bytes",
            "max_side",
            "max_pixels",
            "max_int_digits",
            "max_jpeg_scans",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SubscriberLimits.{name} must be a positive integer")
        if self.max_message_bytes > (1 << 31) - 1:
            raise ValueError("SubscriberLimits.max_message_bytes must fit ZMQ_MAXMSGSIZE (< 2 GiB)")


DEFAULT_LIMITS = SubscriberLimits()
