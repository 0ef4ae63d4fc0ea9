"""What ``segcam eval`` writes: a table, a JSON file, a plot and a worst-edge crop sheet."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import cv2
import numpy as np

from segcam.eval.run import EvalResult
from segcam.fileio import write_atomic

log = logging.getLogger("segcam")

COLUMNS = (
    ("IoU mean", "iou_mean", "{:.4f}"),
    ("IoU worst", "iou_worst", "{:.4f}"),
    ("BF mean", "boundary_f_mean", "{:.4f}"),
    ("BF worst", "boundary_f_worst", "{:.4f}"),
    ("band err", "band_error_mean", "{:.4f}"),
    ("flicker", "flicker_mean", "{:.5f}"),
    ("ghosting", "ghosting_mean", "{:.4f}"),
    ("refine ms", "refine_ms_median", "{:.1f}"),
)


def table(result: EvalResult) -> str:
    """A plain-text table of the settings' summaries."""
    head = ["setting"] + [c[0] for c in COLUMNS]
    rows = [head]
    for name, res in result.settings.items():
        s = res.summary()
        rows.append([name] + [fmt.format(s[k]) if k in s else "-" for _, k, fmt in COLUMNS])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        f"{result.label}: {int(next(iter(result.settings.values())).summary()['frames'])} frames,"
        f" band {result.band:g} px, model {result.infer_ms_median:.1f} ms/frame"
    ]
    for r in rows:
        lines.append(
            "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
        )
    return "\n".join(lines)


def to_json(results: Sequence[EvalResult], extra: Optional[Dict[str, Any]] = None) -> str:
    """Every summary and per-frame score as JSON."""
    doc: Dict[str, Any] = dict(extra or {})
    doc["sources"] = [
        {
            "label": r.label,
            "band_px": r.band,
            "infer_ms_median": r.infer_ms_median,
            "settings": {
                n: {"summary": s.summary(), "frames": [vars(f) for f in s.frames]}
                for n, s in r.settings.items()
            },
        }
        for r in results
    ]
    return json.dumps(doc, indent=1)


def plot(results: Sequence[EvalResult], path: Path) -> Optional[str]:
    """Bar charts of the summaries and per-frame IoU; returns why not when it cannot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib, or segcam[plot])"
    keys = [("IoU", "iou_mean"), ("boundary F", "boundary_f_mean"),
            ("band error", "band_error_mean"), ("flicker", "flicker_mean"),
            ("ghosting", "ghosting_mean")]  # fmt: skip
    fig, axes = plt.subplots(len(results), len(keys) + 1, squeeze=False,
                             figsize=(4 * (len(keys) + 1), 3.2 * len(results)))  # fmt: skip
    for row, r in zip(axes, results):
        names = list(r.settings)
        for ax, (title, key) in zip(row, keys):
            vals = [r.settings[n].summary().get(key, 0.0) for n in names]
            ax.bar(names, vals, color=["#999999", "#4477aa", "#ee6677"][: len(names)])
            ax.set_title(f"{r.label}: {title}", fontsize=9)
            lo = min(vals)
            if key in ("iou_mean", "boundary_f_mean") and lo > 0.5:
                ax.set_ylim(max(0.0, lo - (1 - lo)), 1.0)
        ax = row[-1]
        for n in names:
            ax.plot([f.iou for f in r.settings[n].frames], label=n, linewidth=1)
        ax.set_title(f"{r.label}: IoU per frame", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(str(tmp), dpi=90)
    plt.close(fig)
    tmp.replace(path)
    return None


def _cutout(frame: np.ndarray, mask: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The frame over flat green through the mask, with the true outline in red."""
    green = np.array([64, 177, 0], np.float32)
    m = mask.astype(np.float32)[:, :, None]
    out = (frame.astype(np.float32) * m + green * (1.0 - m) + 0.5).astype(np.uint8)
    contours, _ = cv2.findContours(truth.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, (0, 0, 255), 1)
    return out


def crop_sheet(results: Sequence[EvalResult], path: Path, zoom: int = 2) -> bool:
    """PNG: one row per worst-edge crop (frame | each setting's cut-out); False if none."""
    rows: List[np.ndarray] = []
    for r in results:
        for c in r.crops:
            tiles = [c.frame] + [_cutout(c.frame, m, c.truth) for m in c.masks.values()]
            labels = ["frame"] + list(c.masks)
            big = []
            for tile, label in zip(tiles, labels):
                t = cv2.resize(tile, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)
                t = cv2.copyMakeBorder(t, 18, 2, 2, 2, cv2.BORDER_CONSTANT, value=(255, 255, 255))
                cv2.putText(t, label, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
                big.append(t)
            hmax = max(t.shape[0] for t in big)
            big = [cv2.copyMakeBorder(t, 0, hmax - t.shape[0], 0, 0, cv2.BORDER_CONSTANT,
                                      value=(255, 255, 255)) for t in big]  # fmt: skip
            row = np.hstack(big)
            caption = np.full((16, row.shape[1], 3), 255, np.uint8)
            x0, y0, _, _ = c.box
            cv2.putText(caption, f"{r.label} {c.name} at ({x0},{y0})", (4, 12),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)  # fmt: skip
            rows.append(np.vstack([caption, row]))
    if not rows:
        return False
    wmax = max(r.shape[1] for r in rows)
    rows = [cv2.copyMakeBorder(r, 0, 0, 0, wmax - r.shape[1], cv2.BORDER_CONSTANT,
                               value=(255, 255, 255)) for r in rows]  # fmt: skip
    ok, png = cv2.imencode(".png", np.vstack(rows))
    if not ok:
        return False
    write_atomic(path, png.tobytes())
    return True


def write_json(path: Path, text: str) -> None:
    """Write the JSON report atomically."""
    write_atomic(path, text)


__all__ = ["table", "to_json", "plot", "crop_sheet", "write_json"]
