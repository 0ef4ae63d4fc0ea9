"""OpenCV with GStreamer, installed as on JetPack: the distribution's python3-opencv.

The venv is made as docs/jetson.md says (``--system-site-packages``); pip must leave the
system cv2 (and the numpy it was built against) in place. In it, ``gst:`` inputs run, and
the ``csi://`` pipeline string segcam builds is real GStreamer: parsed exactly as built
(the two Jetson elements registered as stand-ins under their own names), and played with
a test picture at the camera's place.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict

import cv2
import numpy as np
import pytest
from system_env import SYSTEM_DIST_PACKAGES, Segcam, decoded_frames

pytestmark = pytest.mark.system

HERE = Path(__file__).resolve().parent


def _py(venv: Path, code: str) -> str:
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_system_site_venv_keeps_the_distribution_opencv(system_opencv_venv, system_cv2_build):
    assert "GStreamer:                   YES" in system_cv2_build
    where = json.loads(
        _py(
            system_opencv_venv,
            "import json, cv2, numpy; print(json.dumps([cv2.__file__, numpy.__file__, "
            "'GStreamer: YES' in ' '.join(cv2.getBuildInformation().split())]))",
        )
    )
    assert where[0].startswith(SYSTEM_DIST_PACKAGES), f"cv2 from {where[0]}"
    assert where[1].startswith(SYSTEM_DIST_PACKAGES), f"numpy from {where[1]} (pip replaced it)"
    assert where[2], "the cv2 in use has no GStreamer"
    wheels = _py(
        system_opencv_venv,
        "import importlib.metadata as m; print(sorted(d.metadata['Name'] for d in "
        "m.distributions(path=[p for p in __import__('sys').path if 'site-packages' in p])))",
    )
    assert "opencv" not in wheels.lower(), f"pip installed an OpenCV wheel: {wheels}"
    doctor = subprocess.run(
        [str(system_opencv_venv / "bin" / "segcam"), "doctor", "--set", "input.uri=csi://0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = [ln for ln in doctor.stdout.splitlines() if " opencv " in f" {ln} "]
    assert line and "GStreamer: yes" in line[0], doctor.stdout + doctor.stderr


def _run(venv: Path, tmp_path: Path, selfie_onnx: Path, uri: str, *extra: str) -> Dict[str, Any]:
    """``segcam run --input URI`` to a recording; waits for it to end by itself."""
    stats = tmp_path / "stats.json"
    args = [
        "run",
        "--set", f"model.path={selfie_onnx}",
        "--input", uri,
        "--output", f"file://{tmp_path / 'out.avi'}",
        "--set", "output.codec=MJPG",
        "--stats-json", str(stats),
        *extra,
    ]  # fmt: skip
    env = dict(os.environ, SEGCAM_CACHE=str(tmp_path / "cache"))
    env.pop("DISPLAY", None)
    with Segcam(venv / "bin" / "python", args, tmp_path, env) as run:
        rc = run.wait(120)  # a finite pipeline ends the run: no signal is sent
    assert rc == 0, run.text()
    assert "Traceback" not in run.text() and "reconnecting" not in run.text(), run.text()
    return json.loads(stats.read_text())


def test_gst_videotestsrc_input_runs_to_its_end(system_opencv_venv, tmp_path, selfie_onnx):
    uri = (
        "gst:videotestsrc num-buffers=40 pattern=ball ! "
        "video/x-raw,width=320,height=240,framerate=30/1 ! videoconvert ! "
        "video/x-raw,format=BGR ! appsink"
    )
    stats = _run(system_opencv_venv, tmp_path, selfie_onnx, uri)
    assert stats["frames_completed"] == 40, stats["source"]
    frames = decoded_frames(tmp_path / "out.avi")
    assert len(frames) == 40 and frames[0].shape == (240, 320, 3)


def test_gst_file_through_decodebin(system_opencv_venv, tmp_path, selfie_onnx, portrait_bgr):
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 15, (512, 512))
    for i in range(25):
        writer.write(np.roll(portrait_bgr, 4 * i, axis=1))
    writer.release()
    uri = (
        f"gst:filesrc location={clip} ! decodebin ! videoconvert ! video/x-raw,format=BGR ! appsink"
    )
    stats = _run(system_opencv_venv, tmp_path, selfie_onnx, uri)
    assert stats["frames_completed"] == 25, stats["source"]
    frames = decoded_frames(tmp_path / "out.avi")
    assert len(frames) == 25 and frames[0].shape == (512, 512, 3)


def _csi_check(venv: Path, mode: str, typo: str = "") -> Dict[str, Any]:
    env = dict(os.environ, GST_TYPO=typo)
    out = subprocess.run(
        [str(venv / "bin" / "python"), str(HERE / "gst_check.py"), mode, "1280", "720", "30"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    if "No module named 'gi'" in out.stderr or "Namespace Gst not available" in out.stderr:
        pytest.skip("needs python3-gi and gir1.2-gstreamer-1.0 (apt-get install them)")
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_csi_pipeline_string_is_parsed_by_gstreamer(system_opencv_venv):
    results = _csi_check(system_opencv_venv, "csi-parse")
    assert set(results) == {"none", "horizontal", "vertical", "both"}
    for flip, entry in results.items():
        assert entry["ok"], f"{flip}: {entry}"
    # the check can fail: a typo in a caps type, an element or a property name is refused
    for typo in ("(fraction)=>(fractoin)", "videoconvert=>videoconvrt", "flip-method=>flip-mode"):
        broken = _csi_check(system_opencv_venv, "csi-parse", typo)
        assert not broken["none"]["ok"], f"{typo} was accepted: {broken['none']}"


def test_csi_pipeline_plays_with_a_test_source(system_opencv_venv):
    results = _csi_check(system_opencv_venv, "csi-run")
    for flip, entry in results.items():
        assert entry["ok"] and entry["format"] == "BGR", f"{flip}: {entry}"
        assert entry["shape"] == [720, 1280, 3], f"{flip}: {entry}"
    # nvvidconv's flip-method numbers segcam uses give the flips the config asks for
    for flip in ("horizontal", "vertical", "both"):
        assert results[flip]["mean_diff_vs_expected"] < 1.0, f"{flip}: {results[flip]}"


def _gst_check(venv: Path, *args: str, typo: str = "") -> Dict[str, Any]:
    out = subprocess.run(
        [str(venv / "bin" / "python"), str(HERE / "gst_check.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, GST_TYPO=typo),
    )
    lines = out.stdout.strip().splitlines()
    assert lines, f"rc {out.returncode}: {out.stderr[-3000:]}"
    return json.loads(lines[-1])


def _probe(path: Path) -> str:
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=codec_name,nb_read_frames", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return done.stdout.strip()


def test_hardware_recording_pipeline_string_is_parsed_by_gstreamer(system_opencv_venv, tmp_path):
    out = tmp_path / "hw.mp4"
    parsed = _gst_check(system_opencv_venv, "record-parse", str(out))
    assert parsed["ok"], parsed
    assert "nvv4l2h264enc" in parsed["pipeline"] and "mp4mux" in parsed["pipeline"]
    for typo in ("insert-sps-pps=>insert-spspps", "h264parse=>h264parser", "BGRx=>BGRX"):
        broken = _gst_check(system_opencv_venv, "record-parse", str(out), typo=typo)
        assert not broken["ok"], f"{typo} was accepted: {broken}"


@pytest.mark.parametrize("killed", [False, True], ids=["closed", "kill-9"])
def test_recording_through_gstreamer_with_x264enc(system_opencv_venv, tmp_path, killed):
    """The recorder's GStreamer pipeline, x264enc in nvv4l2h264enc's place, through the
    distribution's cv2; killed mid-recording, the fragments written so far still play."""
    if shutil.which("ffprobe") is None:
        pytest.skip("needs ffprobe (apt-get install ffmpeg)")
    out = tmp_path / "rec.mp4"
    args = ["record", str(out), "60"] + (["kill"] if killed else [])
    result = _gst_check(system_opencv_venv, *args)
    assert "x264enc" in result["pipeline"] and "mp4mux fragment-duration=500" in result["pipeline"]
    codec, _, frames = _probe(out).partition(",")
    assert codec == "h264", _probe(out)
    gop = 12  # 0.5 s fragments at 25 fps
    if killed:
        assert 60 - 2 * gop <= int(frames) <= 60, frames
    else:
        assert int(frames) == 60
