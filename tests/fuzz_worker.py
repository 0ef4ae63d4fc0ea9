"""A subprocess that runs hostile cases under hard limits, one JSON line per case.

Run as ``python tests/fuzz_worker.py [AS_MIB] [CASE_S]``; stdin carries records of a
4-byte big-endian length and a pickled ``(kind, data, options)`` tuple:

* ``("wire", frames, limits_kwargs)``: ``segcam.publish.protocol.decode(frames)``;
* ``("config", yaml_text, {"overrides": [...], "roundtrip": bool})``:
  ``segcam.config.parse_config`` of the text, or ``load_config(None, overrides)`` when
  the text is None; with ``roundtrip`` an accepted config must also read back the same
  from ``dump_config``.

For each it writes ``{"i", "result", "kind", "error", "ms", "cpu_ms", "rss_mib"}``: ``result`` is
``"ok"``, ``"project"`` (the project's own error for this input: ProtocolError or
ConfigError; ``kind`` says which), ``"timeout"`` or ``"other"`` (any other exception:
a bug). A segfault or a blown memory limit ends the process, which the caller sees as
a missing line and a non-zero exit. Each case runs under an interval timer of CASE_S
seconds and the whole worker under RLIMIT_AS of AS_MIB MiB.
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
    """A single case took longer than its time bound."""


def _on_alarm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise CaseTimeout()


def main() -> int:
    as_mib = int(sys.argv[1]) if len(sys.argv) > 1 else 3072
    case_s = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    import cv2  # noqa: F401 - imported before the limit so its arenas are in place
    import numpy  # noqa: F401

    from segcam import config
    from segcam.errors import ConfigError, ProtocolError
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
        kind, data, options = pickle.loads(stdin.read(n))
        rec = {"i": i, "result": "ok", "kind": None, "error": None}
        t0, c0 = time.perf_counter(), time.process_time()
        signal.setitimer(signal.ITIMER_REAL, case_s)
        try:
            if kind == "wire":
                kwargs = {"limits": SubscriberLimits(**options)} if options else {}
                msg = protocol.decode(data, **kwargs)
                rec["topic"] = msg.topic
                if msg.topic == "mask":
                    rec["shape"] = list(msg.data.shape)
            else:
                if data is None:
                    cfg = config.load_config(None, options["overrides"])
                else:
                    cfg = config.parse_config(data, "fuzz.yaml")
                if options.get("roundtrip"):  # what is accepted is what dump_config prints
                    again = config.parse_config(config.dump_config(cfg))
                    if config.config_to_dict(again) != config.config_to_dict(cfg):
                        raise AssertionError("dump_config does not read back the same config")
        except (ProtocolError, ConfigError) as exc:
            rec["result"], rec["kind"] = "project", getattr(exc, "kind", type(exc).__name__)
            rec["error"] = str(exc)[:300]
        except CaseTimeout:
            rec["result"], rec["error"] = "timeout", f"over {case_s} s"
        except Exception as exc:  # noqa: BLE001 - reporting every non-project error is the job
            rec["result"], rec["error"] = "other", f"{type(exc).__name__}: {str(exc)[:300]}"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        rec["ms"] = round((time.perf_counter() - t0) * 1000, 3)
        rec["cpu_ms"] = round((time.process_time() - c0) * 1000, 3)
        rec["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        stdout.write(json.dumps(rec) + "\n")
        stdout.flush()
        i += 1


if __name__ == "__main__":
    sys.exit(main())
