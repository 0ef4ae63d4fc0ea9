"""Model-only benchmark: converted ONNX on ONNX Runtime (CPU) vs the .tflite on LiteRT.

    python bench/model_bench.py [--runs 200] [--threads 1 2] [--models NAME ...]
                                [--cache-dir DIR] [--json OUT.json]

Prints a table (median of >= 200 interleaved runs per backend) and the machine's load.
A benchmark, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from segcam.errors import SegcamError  # noqa: E402
from segcam.models.bench import DEFAULT_MODELS, run_model_bench  # noqa: E402


def main() -> int:
    """Parse arguments, run the benchmark, optionally write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args()
    try:
        report = run_model_bench(
            args.models, args.threads, args.runs, args.cache_dir, warmup=args.warmup
        )
    except SegcamError as exc:
        print(f"model_bench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
