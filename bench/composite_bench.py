"""The CPU composite (refine + compose) per background mode, this tree against another (not a test).

Runs the composite stage's work (``MaskRefiner.refine`` + ``Compositor.compose``, as
``segcam.pipeline.stages.CpuComposite`` calls them) on the demo scene's frames and the real
model's masks, at 720p and 1080p, and prints p50 wall and CPU milliseconds per mode. With
``--baseline DIR`` (a checkout of another commit, e.g. ``git worktree add /tmp/base 74c3cdc``)
the same measurement runs there too, each tree in its own subprocess that imports that
tree's ``app/`` as ``segcam``, and the table shows both side by side.

    .venv/bin/python bench/composite_bench.py [--baseline /tmp/base] [--runs 60]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

HERE = Path(__file__).resolve().parent.parent
SIZES = ((1280, 720), (1920, 1080))
MODES = ("blur", "color", "image", "video", "none", "overlay")


def _import_tree(tree: Path) -> None:
    """Make ``import segcam`` load ``tree/app`` (a symlink farm on sys.path)."""
    shim = Path(tempfile.mkdtemp(prefix="segcam-bench-"))
    (shim / "segcam").symlink_to(tree / "app")
    sys.path.insert(0, str(shim))


def _clip_data(w: int, h: int, n: int) -> Tuple[List[Any], List[Any]]:
    """Demo frames and the default model's probabilities for them."""
    import numpy as np

    from segcam.config import load_config
    from segcam.demo_scene import DemoScene
    from segcam.inference.postprocess import to_probability
    from segcam.inference.preprocess import Preprocessor
    from segcam.pipeline.assemble import open_backend, resolve_model

    cfg = load_config()
    prof, _ = resolve_model(cfg)
    backend, _ = open_backend(cfg)
    pre = Preprocessor(prof)
    scene = DemoScene(w, h)
    frames, probs = [], []
    tensor = np.empty(prof.input_shape, prof.np_dtype)
    for i in range(n):
        frame, _ = scene.render(i * 3)
        pre(frame, tensor)
        probs.append(to_probability(backend.infer(tensor), prof).copy())
        frames.append(frame)
    backend.close()
    return frames, probs


def _background(mode: str, media: Path) -> Any:
    from segcam.config import BackgroundConfig

    if mode == "image":
        return BackgroundConfig(mode="image", image=str(media / "bg.png"))
    if mode == "video":
        return BackgroundConfig(mode="video", video=str(media / "bg.avi"))
    return BackgroundConfig(mode=mode)


def _media(root: Path) -> Path:
    """A picture and a short MJPEG clip for the image and video modes."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    pic = cv2.GaussianBlur(rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8), (0, 0), 4)
    cv2.imwrite(str(root / "bg.png"), pic)
    vw = cv2.VideoWriter(str(root / "bg.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 30, (1280, 720))
    for i in range(30):
        vw.write(np.roll(pic, i * 8, axis=1))
    vw.release()
    return root


def measure(runs: int) -> Dict[str, Any]:
    """p50 wall / CPU ms of refine + compose per size and mode in this process's tree."""
    import numpy as np

    from segcam.compose import Compositor
    from segcam.config import RefineConfig
    from segcam.refine import MaskRefiner

    media = _media(Path(tempfile.mkdtemp(prefix="segcam-bench-media-")))
    result: Dict[str, Any] = {}
    for w, h in SIZES:
        frames, probs = _clip_data(w, h, 20)
        out = np.empty((h, w, 3), np.uint8)
        mask = np.empty((h, w), np.float32)
        for mode in MODES:
            refiner = MaskRefiner(RefineConfig())
            comp = Compositor(_background(mode, media))
            coverage = "coverage" in Compositor.compose.__code__.co_varnames
            wall: List[float] = []
            cpu: List[float] = []
            for i in range(runs + 5):
                frame, prob = frames[i % len(frames)], probs[i % len(probs)]
                t0, c0 = time.perf_counter(), time.process_time()
                refiner.refine(prob, (h, w), out=mask)
                if coverage:
                    comp.compose(frame, mask, out=out, coverage=refiner.coverage)
                else:
                    comp.compose(frame, mask, out=out)
                if i >= 5:
                    wall.append((time.perf_counter() - t0) * 1e3)
                    cpu.append((time.process_time() - c0) * 1e3)
            comp.close()
            result[f"{w}x{h} {mode}"] = {
                "wall_p50": statistics.median(wall),
                "cpu_p50": statistics.median(cpu),
            }
    return result


def _run_tree(tree: Path, runs: int) -> Dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", str(tree), "--runs", str(runs)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        sys.stderr.write(res.stderr)
        raise SystemExit(f"composite_bench: the run in {tree} failed")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=60, help="measured frames per mode (60)")
    ap.add_argument("--baseline", type=Path, help="another checkout to measure the same way")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _import_tree(args.child.resolve())
        print(json.dumps(measure(args.runs)))
        return 0
    trees = [("this", HERE)]
    if args.baseline:
        trees.insert(0, ("baseline", args.baseline.resolve()))
    results = {name: _run_tree(tree, args.runs) for name, tree in trees}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    import cv2

    print(
        f"composite_bench: {os.cpu_count()} cpus, load {load:.2f}, cv2 {cv2.__version__}, "
        f"{args.runs} frames per mode, default refine; p50 ms wall / CPU"
    )
    head = "".join(f"{name + ' wall/cpu':>22}" for name, _ in trees)
    print(f"{'size mode':<18}{head}")
    for key in results["this"]:
        cells = "".join(
            f"{r[key]['wall_p50']:>12.2f} /{r[key]['cpu_p50']:>7.2f}"
            for r in (results[n] for n, _ in trees)
        )
        print(f"{key:<18}{cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
