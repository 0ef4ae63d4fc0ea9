"""``segcam eval`` end to end: a real folder of image + mask pairs, the real model, a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from segcam.demo_scene import DemoScene


def _segcam(*args: str, env_cache: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, SEGCAM_CACHE=str(env_cache))
    return subprocess.run(
        [sys.executable, "-m", "segcam", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def _pairs(folder: Path, n: int, layout: str) -> None:
    scene = DemoScene(192, 108)
    if layout == "split":
        (folder / "images").mkdir(parents=True)
        (folder / "masks").mkdir()
    else:
        folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        frame, truth = scene.render(i * 3)
        if layout == "split":
            cv2.imwrite(str(folder / "images" / f"f{i:02d}.jpg"), frame)
            cv2.imwrite(str(folder / "masks" / f"f{i:02d}.png"), truth * 255)
        else:
            cv2.imwrite(str(folder / f"f{i:02d}.png"), frame)
            cv2.imwrite(str(folder / f"f{i:02d}_mask.png"), truth * 255)


def test_eval_on_a_folder_writes_table_json_plot_and_crops(tmp_path, selfie_onnx) -> None:
    folder = tmp_path / "pairs"
    _pairs(folder, 3, "flat")
    out = tmp_path / "out"
    proc = _segcam(
        "eval", "--folder", str(folder), "--sequence", "--output-dir", str(out), "--crops", "2",
        "--set", f"model.path={selfie_onnx}", env_cache=selfie_onnx.parent,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for name in ("raw", "refine", "guided"):
        assert any(line.startswith(name) for line in lines), proc.stdout
    doc = json.loads((out / "eval.json").read_text())
    src = doc["sources"][0]
    assert set(src["settings"]) == {"raw", "refine", "guided"}
    raw = src["settings"]["raw"]
    assert len(raw["frames"]) == 3 and raw["frames"][0]["flicker"] is None
    assert raw["frames"][1]["flicker"] is not None  # --sequence: consecutive frames
    s = raw["summary"]
    assert 0.5 < s["iou_mean"] <= 1.0 and 0.0 <= s["band_error_mean"] <= 1.0
    sheet = cv2.imread(str(out / "eval-worst-edges.png"))
    assert sheet is not None and sheet.shape[0] > 100 and sheet.shape[1] > 4 * 128
    assert (out / "eval-plot.png").stat().st_size > 1000


def test_eval_on_a_demo_size_and_split_folder(tmp_path, selfie_onnx) -> None:
    out = tmp_path / "out"
    proc = _segcam(
        "eval", "--demo", "160x96", "--frames", "3", "--settings", "raw,guided",
        "--output-dir", str(out), "--set", f"model.path={selfie_onnx}",
        env_cache=selfie_onnx.parent,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "demo 160x96: 3 frames" in proc.stdout
    doc = json.loads((out / "eval.json").read_text())
    assert list(doc["sources"][0]["settings"]) == ["raw", "guided"]
    folder = tmp_path / "split"
    _pairs(folder, 2, "split")
    proc = _segcam(
        "eval", "--folder", str(folder), "--output-dir", str(out), "--crops", "0",
        "--set", f"model.path={selfie_onnx}", env_cache=selfie_onnx.parent,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    frames = json.loads((out / "eval.json").read_text())["sources"][0]["settings"]["raw"]
    assert [f["name"] for f in frames["frames"]] == ["f00", "f01"]
    assert all(f["flicker"] is None for f in frames["frames"])  # independent pictures


def test_eval_refuses_bad_folders_with_clear_errors(tmp_path, selfie_onnx) -> None:
    base = ("--set", f"model.path={selfie_onnx}", "--output-dir", str(tmp_path / "o"))
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _segcam("eval", "--folder", str(empty), *base, env_cache=selfie_onnx.parent)
    assert proc.returncode != 0 and "no image + mask pairs" in proc.stderr
    assert "Traceback" not in proc.stderr
    bad = tmp_path / "bad"
    _pairs(bad, 1, "flat")
    cv2.imwrite(str(bad / "f00_mask.png"), np.zeros((10, 10), np.uint8))
    proc = _segcam("eval", "--folder", str(bad), *base, env_cache=selfie_onnx.parent)
    assert proc.returncode != 0 and "f00_mask.png is 10x10" in proc.stderr
    (bad / "f00.png").write_bytes(b"not a picture")
    cv2.imwrite(str(bad / "f00_mask.png"), np.zeros((108, 192), np.uint8))
    proc = _segcam("eval", "--folder", str(bad), *base, env_cache=selfie_onnx.parent)
    assert proc.returncode != 0 and "not a picture OpenCV can decode" in proc.stderr
    proc = _segcam("eval", "--settings", "raw,magic", *base, env_cache=selfie_onnx.parent)
    assert proc.returncode != 0 and "unknown eval setting 'magic'" in proc.stderr
    assert "Traceback" not in proc.stderr


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` (its data is a stub)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_a_small_file_declaring_a_gigantic_picture_is_refused(tmp_path) -> None:
    import pytest

    from segcam.errors import SourceError
    from segcam.eval.frames import folder_frames

    (tmp_path / "big.png").write_bytes(_png_header(60000, 60000))
    (tmp_path / "big_mask.png").write_bytes(_png_header(60000, 60000))
    with pytest.raises(SourceError, match="larger than"):
        list(folder_frames(tmp_path))
