"""Recordings open in a real browser: headless Chromium decodes them in a <video> element.

The page loads each file and reports the first decoded frame (``loadeddata``: size and
duration) or the media error. Headless Chromium does not advance playback here, so the
proof is that the browser accepts and decodes the stream, including a file cut by kill -9;
the old mp4v recording is shown to fail (MEDIA_ERR_SRC_NOT_SUPPORTED = 4) for contrast.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
from recording_helpers import need_pyav

from segcam.config import RecordConfig
from segcam.recording.recorder import SegmentRecorder

PAGE = """<!doctype html><html><body><div id="out">pending</div><script>
const results = {};
function report(name, text) {
  results[name] = text;
  document.getElementById("out").textContent = "RESULT " + JSON.stringify(results);
}
for (const f of location.hash.slice(1).split(",")) {
  const v = document.createElement("video");
  v.muted = true; v.preload = "auto";
  v.addEventListener("error", () => report(f, "error " + (v.error && v.error.code)));
  v.addEventListener("loadeddata", () => report(f, `loaded ${v.videoWidth}x${v.videoHeight}`));
  v.src = f;
  document.body.appendChild(v);
}
</script></body></html>
"""

KILLED = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import numpy as np
    from segcam.config import RecordConfig
    from segcam.recording.recorder import SegmentRecorder
    rec = SegmentRecorder(Path(sys.argv[1]), "auto", RecordConfig(min_free_mib=0), fps=25.0)
    rec.lossless = True
    rec.start(None, 25.0)
    for i in range(60):
        rec.write(np.full((96, 160, 3), (i * 4) % 256, np.uint8), None, 0)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _record(path: Path, codec: str) -> None:
    rec = SegmentRecorder(path, codec, RecordConfig(recorder="pyav", min_free_mib=0), fps=25.0)
    rec.lossless = True
    rec.start(None, 25.0)
    for i in range(40):
        frame = np.zeros((96, 160, 3), np.uint8)
        cv2.circle(frame, (20 + 3 * i, 48), 12, (40, 200, 255), -1)
        rec.write(frame, None, 0)
    rec.close()


def test_chromium_decodes_h264_mp4_vp9_webm_and_a_killed_recording(tmp_path) -> None:
    need_pyav()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium not installed (apt-get install chromium)")
    _record(tmp_path / "h264.mp4", "auto")
    _record(tmp_path / "vp9.webm", "auto")
    _record(tmp_path / "vp8.webm", "vp8")
    done = subprocess.run([sys.executable, "-c", KILLED, str(tmp_path / "killed.mp4")])
    assert done.returncode == -signal.SIGKILL
    old = cv2.VideoWriter(str(tmp_path / "old.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25, (160, 96))
    for i in range(10):
        old.write(np.full((96, 160, 3), i * 20, np.uint8))
    old.release()
    (tmp_path / "page.html").write_text(PAGE)
    names = ["h264.mp4", "vp9.webm", "vp8.webm", "killed.mp4", "old.mp4"]
    cmd = [
        browser,
        "--headless=new",
        "--no-sandbox",  # root in CI
        "--disable-gpu",
        "--allow-file-access-from-files",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--dump-dom",
        "--timeout=6000",
        f"file://{tmp_path / 'page.html'}#{','.join(names)}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    m = re.search(r"RESULT (\{[^<]*\})", out)
    assert m, out[-2000:]
    results = json.loads(m.group(1).replace("&quot;", '"'))
    for name in names[:4]:
        assert results.get(name) == "loaded 160x96", results
    assert results.get("old.mp4") == "error 4", results  # mp4v: not supported in browsers
