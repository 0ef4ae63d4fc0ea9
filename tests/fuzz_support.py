"""Seeds and reporting of the fuzz tier (tests/test_fuzz_*.py).

Every fuzz test runs its cases twice: with a fixed seed (the same cases on every run,
so a regression shows up at once) and with a rotating one (new cases each run). The
rotating seed is printed in the summary at the end of the pytest log; set
``SEGCAM_FUZZ_SEED`` to it to replay that run. ``SEGCAM_FUZZ_REPORT=FILE`` also appends
each summary to FILE as one JSON object per line.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Dict, List, Sequence, Tuple

FIXED_SEED = 20261202
REPORTS: List[Dict[str, Any]] = []


def seeds() -> Tuple[int, int]:
    """(fixed seed, rotating seed)."""
    env = os.environ.get("SEGCAM_FUZZ_SEED")
    rotating = int(env) if env else int.from_bytes(os.urandom(4), "big")
    return FIXED_SEED, rotating


def report(
    name: str,
    seeds_used: Sequence[int],
    descriptions: Sequence[str],
    results: Sequence[Dict[str, Any]],
    seconds: float,
) -> Dict[str, Any]:
    """Summarise one fuzz run (counts, cases/s, slowest case) and keep it for the log."""
    # CPU time picks the slowest case: wall time on a shared machine mostly measures load.
    slowest = max(range(len(results)), key=lambda i: results[i]["cpu_ms"])
    rec = {
        "name": name,
        "seeds": list(seeds_used),
        "cases": len(results),
        "seconds": round(seconds, 2),
        "cases_per_s": round(len(results) / max(seconds, 1e-9), 1),
        "accepted": sum(r["result"] == "ok" for r in results),
        "project_errors": sum(r["result"] == "project" for r in results),
        "cpu_s": round(sum(r["cpu_ms"] for r in results) / 1000, 2),
        "slowest_ms": results[slowest]["ms"],
        "slowest_cpu_ms": results[slowest]["cpu_ms"],
        "slowest_case": descriptions[slowest][:120],
        "peak_rss_mib": max(r["rss_mib"] for r in results),
    }
    REPORTS.append(rec)
    path = os.environ.get("SEGCAM_FUZZ_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
    print(json.dumps(rec))
    return rec


def failures(descriptions: Sequence[str], results: Sequence[Dict[str, Any]], seed: Any) -> str:
    """Readable list of the cases that raised something other than the project's errors."""
    bad = [
        f"case {r['i']} [{descriptions[r['i']][:160]}]: {r['result']}: {r['error']}"
        for r in results
        if r["result"] not in ("ok", "project")
    ]
    return f"{len(bad)} bad cases (replay with SEGCAM_FUZZ_SEED={seed}):\n" + "\n".join(bad[:20])


def run_tier(
    tier: str,
    generate: Callable[[int, int], Tuple[List[Any], List[str]]],
    per_seed: int,
    case_s: float,
    wrap: Callable[[Any], Any] = lambda case: case,
) -> Tuple[List[Dict[str, Any]], List[str]]:
    """Generate ``per_seed`` cases for each seed, run them in the limited worker, report,
    and fail on any result other than accepted or one of the project's own errors.

    Returns the results and the cases' descriptions, for the tier's own checks.
    """
    from wire_hostile import run_in_worker

    cases: List[Any] = []
    descriptions: List[str] = []
    owner: List[int] = []
    tier_seeds = seeds()
    for seed in tier_seeds:
        c, d = generate(seed, per_seed)
        cases += [wrap(case) for case in c]
        descriptions += d
        owner += [seed] * len(c)
    t0 = time.perf_counter()
    results = run_in_worker(cases, as_mib=2048, case_s=case_s)
    report(tier, tier_seeds, descriptions, results, time.perf_counter() - t0)
    bad = [r for r in results if r["result"] not in ("ok", "project")]
    assert not bad, failures(descriptions, results, owner[bad[0]["i"]] if bad else None)
    return results, descriptions
