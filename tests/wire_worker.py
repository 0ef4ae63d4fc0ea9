"""A subprocess that decodes wire messages under hard limits, one JSON line per message.

Run as ``python tests/wire_worker.py [AS_MIB] [CASE_S]``; stdin carries records of a
4-byte big-endian length and a pickled ``(frames, limits_kwargs)`` tuple. For each it
writes ``{"i", "result", "kind", "error", "ms", "rss_mib"}``: ``result`` is ``"ok"``,
``"protocol"`` (a ProtocolError, ``kind`` says which) or ``"other"`` (any other
exception: a bug). A segfault or a blown memory limit ends the process, which the
caller sees as a missing line and a non-zero exit. Each message runs under an interval
timer of CASE_S seconds and the whole worker under RLIMIT_AS of AS_MIB MiB.
"""

from __future__ import annotations

import json
import pickle
import resource
import signal
import struct
import sys
import time


class CaseTimeout(Exception):
    """A single message took longer than its time bound."""


def _on_alarm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise CaseTimeout()


def main() -> int:
    as_mib = int(sys.argv[1]) if len(sys.argv) > 1 else 3072
    case_s = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    import cv2  # noqa: F401
    import numpy  # noqa: F401 - imported before the limit so its arenas are in place

    from segcam.errors import ProtocolError
    from segcam.publish import protocol
    from segcam.publish.limits import SubscriberLimits

    resource.setrlimit(resource.RLIMIT_AS, (as_mib << 20, as_mib << 20))
    signal.signal(signal.SIGALRM, _on_alarm)
    stdin, stdout = sys.stdin.buffer, sys.stdout
    i = 0
    while True:
        head = stdin.read(4)
        if len(head) < 4:
            return 0
        (n,) = struct.unpack(">I", head)
        frames, limits_kwargs = pickle.loads(stdin.read(n))
        kwargs = {"limits": SubscriberLimits(**limits_kwargs)} if limits_kwargs else {}
        rec = {"i": i, "result": "ok", "kind": None, "error": None}
        t0 = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, case_s)
        try:
            msg = protocol.decode(frames, **kwargs)
            rec["topic"] = msg.topic
            if msg.topic == "mask":
                rec["shape"] = list(msg.data.shape)
        except ProtocolError as exc:
            rec["result"], rec["kind"] = "protocol", getattr(exc, "kind", None)
            rec["error"] = str(exc)[:300]
        except CaseTimeout:
            rec["result"], rec["error"] = "timeout", f"over {case_s} s"
        except Exception as exc:  # noqa: BLE001 - reporting every non-project error is the job
            rec["result"], rec["error"] = "other", f"{type(exc).__name__}: {str(exc)[:300]}"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        rec["ms"] = round((time.perf_counter() - t0) * 1000, 3)
        rec["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        stdout.write(json.dumps(rec) + "\n")
        stdout.flush()
        i += 1


if __name__ == "__main__":
    sys.exit(main())
