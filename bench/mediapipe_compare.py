"""segcam's masks against Google's own MediaPipe pipeline on the same frames.

    python bench/mediapipe_compare.py [--venv DIR] [--frames 30] [--size 1920x1080 ...]
                                      [--json OUT.json]

MediaPipe runs in its own virtual environment (``mediapipe==0.10.14`` from PyPI, created
under ``--venv`` on first use, default /tmp/segcam-mediapipe-venv), through its legacy
``solutions.selfie_segmentation`` (model_selection 0 = general, 1 = landscape). segcam runs
the converted models with ONNX Runtime on the CPU, raw bilinear upsampling as MediaPipe
does, once with each profile's resampling convention and once with cv2.resize's
half-pixel one. Both masks are cut at 0.5; the table gives IoU against MediaPipe
(median, worst) and against the demo's true silhouettes. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MEDIAPIPE = "mediapipe==0.10.14"
PROFILES = {"mediapipe-selfie": 0, "mediapipe-selfie-landscape": 1}

# Runs inside the MediaPipe venv: frames.npz (BGR) -> masks.npz (packed bits, > 0.5).
CHILD = r"""
import sys, numpy as np
import mediapipe as mp
frames = np.load(sys.argv[1])["frames"]
out = {}
for sel in (0, 1):
    with mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=sel) as seg:
        masks = []
        for f in frames:
            m = seg.process(np.ascontiguousarray(f[:, :, ::-1])).segmentation_mask
            masks.append(np.packbits(m > 0.5, axis=-1))
        out["m%d" % sel] = np.stack(masks)
np.savez(sys.argv[2], **out)
print("mediapipe", mp.__version__)
"""


def ensure_venv(venv: Path) -> Path:
    """The venv's python, creating the venv and installing MediaPipe when missing."""
    py = venv / "bin" / "python"
    if py.is_file():
        return py
    print(f"creating {venv} with {MEDIAPIPE} (once) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    proc = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", MEDIAPIPE], capture_output=True, text=True
    )
    if proc.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        versions = ""
        if shutil.which("pyenv"):
            versions = subprocess.run(["pyenv", "versions"], capture_output=True, text=True).stdout
        sys.exit(
            f"cannot install {MEDIAPIPE} for Python {sys.version.split()[0]}:\n"
            f"{proc.stderr.strip()[-800:]}\n"
            "run this script with a Python MediaPipe 0.10.14 has wheels for (3.8-3.12)"
            + (f"; pyenv has:\n{versions}" if versions else "")
        )
    return py


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks (1.0 when both are empty)."""
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def segcam_masks(frames: np.ndarray, name: str, resample: str) -> List[np.ndarray]:
    """segcam's raw masks (> 0.5) for ``frames`` with profile ``name`` and a convention."""
    import cv2

    from segcam.config import load_config
    from segcam.inference.postprocess import to_probability
    from segcam.inference.preprocess import Preprocessor
    from segcam.inference.profile import replace
    from segcam.pipeline.assemble import open_backend

    cfg = load_config(None, [f"model.name={name}", "inference.backend=onnxruntime"])
    backend, _ = open_backend(cfg)
    profile = replace(backend.profile, resample=resample)
    pre = Preprocessor(profile)
    out = []
    for f in frames:
        p = to_probability(backend.infer(pre(f)), profile)
        up = cv2.resize(p, (f.shape[1], f.shape[0]), interpolation=cv2.INTER_LINEAR)
        out.append(up > 0.5)
    backend.close()
    return out


def stats(values: List[float]) -> Tuple[float, float, float]:
    """(median, worst, mean)."""
    v = np.asarray(values)
    return float(np.median(v)), float(v.min()), float(v.mean())


def main() -> int:
    """Run MediaPipe and segcam on the same demo frames and print the agreement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=Path("/tmp/segcam-mediapipe-venv"))
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--size", action="append", default=None, metavar="WxH")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from segcam.demo_scene import DemoScene

    py = ensure_venv(args.venv)
    report: Dict[str, object] = {"mediapipe": MEDIAPIPE, "frames": args.frames, "rows": []}
    rows = report["rows"]
    assert isinstance(rows, list)
    for size in args.size or ["1920x1080"]:
        w, h = (int(v) for v in size.split("x"))
        scene = DemoScene(w, h)
        rendered = [scene.render(i * 4) for i in range(args.frames)]  # 4.5 s of the scene
        frames = np.stack([f for f, _ in rendered])
        truths = [t > 0 for _, t in rendered]
        with tempfile.TemporaryDirectory(prefix="segcam-mp-") as tmp:
            np.savez(os.path.join(tmp, "frames.npz"), frames=frames)
            proc = subprocess.run(
                [str(py), "-c", CHILD, os.path.join(tmp, "frames.npz"),
                 os.path.join(tmp, "masks.npz")],
                capture_output=True, text=True,
            )  # fmt: skip
            if proc.returncode != 0:
                sys.exit(f"MediaPipe failed:\n{proc.stderr[-2000:]}")
            mp_masks = np.load(os.path.join(tmp, "masks.npz"))
            mp = {
                k: [np.unpackbits(m, axis=-1, count=w).astype(bool) for m in mp_masks[k]]
                for k in ("m0", "m1")
            }
        print(f"\n{size}, {args.frames} demo frames; IoU (median / worst / mean)")
        print(f"{'profile':28s} {'resample':22s} {'vs MediaPipe':>24s} {'vs truth':>24s}")
        for name, sel in PROFILES.items():
            ref = mp[f"m{sel}"]
            t_mp = stats([iou(m, t) for m, t in zip(ref, truths)])
            print(f"{name:28s} {'(MediaPipe itself)':22s} {'':>24s} "
                  f"{t_mp[0]:.4f} / {t_mp[1]:.4f} / {t_mp[2]:.4f}")  # fmt: skip
            for resample in ("bilinear_top_left", "bilinear_half_pixel"):
                ours = segcam_masks(frames, name, resample)
                vs_mp = stats([iou(a, b) for a, b in zip(ours, ref)])
                vs_t = stats([iou(a, t) for a, t in zip(ours, truths)])
                print(f"{name:28s} {resample:22s} "
                      f"{vs_mp[0]:.4f} / {vs_mp[1]:.4f} / {vs_mp[2]:.4f} "
                      f"{vs_t[0]:.4f} / {vs_t[1]:.4f} / {vs_t[2]:.4f}")  # fmt: skip
                rows.append({"size": size, "profile": name, "resample": resample,
                             "iou_vs_mediapipe": vs_mp, "iou_vs_truth": vs_t,
                             "mediapipe_vs_truth": t_mp})  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
