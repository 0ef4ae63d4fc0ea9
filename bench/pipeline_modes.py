"""Sequential vs pipelined throughput, several interleaved rounds, medians (not a test).

``segcam bench`` runs each mode once; on a shared machine one round is at the mercy of
whatever else runs at that moment. This script alternates the two modes for ``--rounds``
rounds in one process and reports the medians, the load before/after and how many cores
each mode actually got (process CPU time / wall time), so a figure can be judged.

    python bench/pipeline_modes.py --rounds 5 --frames 60 [--resolution 1920x1080]
        [--set key=value ...] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from typing import Any, Dict, List


def main(argv: Any = None) -> int:
    """Run the rounds and print a summary (and write JSON if asked)."""
    from segcam.commands.bench import apply_lib_threads, parse_resolution, run_bench
    from segcam.config import load_config
    from segcam.log import setup_logging

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--resolution", default="1920x1080")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--lib-threads", type=int, default=0, help="OpenCV/ORT threads (0 = default)")
    args = ap.parse_args(argv)
    setup_logging("warning")
    w, h = parse_resolution(args.resolution)
    cfg = load_config(
        None,
        [f"input.width={w}", f"input.height={h}", "pipeline.status_interval_s=0"] + args.overrides,
    )
    if args.lib_threads:
        apply_lib_threads(cfg, args.lib_threads)
    load_before = os.getloadavg()
    rounds: List[Dict[str, Any]] = []
    for i in range(args.rounds):
        r = run_bench(cfg, args.frames, args.warmup)
        rounds.append(r)
        print(
            f"round {i + 1}: sequential {r['sequential_fps']:.2f} fps "
            f"({r['sequential_cores_used']} cores), pipelined {r['pipelined_fps']:.2f} fps "
            f"({r['pipelined_cores_used']} cores), speedup {r['speedup']}, bound ratio "
            f"{r['bound_ratio']} ({r['slowest_stage']}), load {r['machine']['load_average']}",
            flush=True,
        )

    def med(key: str) -> float:
        vals = [r[key] for r in rounds if r.get(key) is not None]
        return round(statistics.median(vals), 3) if vals else float("nan")

    summary = {
        "resolution": f"{w}x{h}",
        "frames": args.frames,
        "rounds": args.rounds,
        "lib_threads": rounds[0]["lib_threads"] if rounds else None,
        "sequential_fps": med("sequential_fps"),
        "pipelined_fps": med("pipelined_fps"),
        "speedup": med("speedup"),
        "bound_ratio": med("bound_ratio"),
        "sequential_cpu_ms_per_frame": med("sequential_cpu_ms_per_frame"),
        "pipelined_cpu_ms_per_frame": med("pipelined_cpu_ms_per_frame"),
        "sequential_cores_used": med("sequential_cores_used"),
        "pipelined_cores_used": med("pipelined_cores_used"),
        "cpu_count": os.cpu_count(),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "per_round": rounds,
    }
    brief = {k: v for k, v in summary.items() if k != "per_round"}
    print(json.dumps(brief, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
