"""docs/protocol.md stays exact: its examples are what the code sends, and the decoders it
gives for Python, JavaScript (node) and C decode what the publisher encodes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import List

import numpy as np
import pytest

from segcam.publish import protocol, rle

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def _block(doc: str, lang: str, marker: str) -> str:
    for body in re.findall(rf"```{lang}\n(.*?)```", doc, flags=re.S):
        if marker in body:
            return body
    raise AssertionError(f"no ```{lang} block containing {marker!r} in {DOC}")


def _vectors() -> List[np.ndarray]:
    rng = np.random.default_rng(3)
    out = [np.array([[0, 0, 1, 1], [0, 1, 1, 0], [0, 1, 1, 0]], np.uint8)]
    out += [np.ones((5, 7), np.uint8), np.zeros((2, 3), np.uint8)]
    for _ in range(12):
        h, w = rng.integers(1, 70, 2)
        out.append((rng.random((h, w)) < rng.random()).astype(np.uint8))
    yy, xx = np.mgrid[0:600, 0:900]
    out.append((np.hypot(xx - 450, yy - 300) < 250).astype(np.uint8))  # long runs
    return out


def test_walkthrough_bytes_are_what_the_publisher_sends(doc: str) -> None:
    header = protocol.base_header(
        "cam0", "5f2c9a01d4e3b687", 42, "rle", dropped=3, session_start_ns=1763805598500000000
    )
    header.update(
        publish_ts_ns=1763805600012345678,
        frame_id=1234,
        capture_ts_ns=1763805600000000000,
        width=4,
        height=3,
        frame_width=4,
        frame_height=3,
        values="binary",
        dtype="uint8",
        model="mediapipe-selfie-256",
        threshold=0.5,
        inferred=True,
    )
    mask = _vectors()[0]
    frames = protocol.pack("mask", header, rle.encode(mask))
    assert f"frame 1 ({len(frames[1])} bytes): {frames[1].decode()}\n" in doc
    assert frames[2] == b"462" and "`34 36 32`" in doc
    msg = protocol.decode(frames)
    assert np.array_equal(msg.data, mask)
    for key in header:  # every field the code sends is documented
        assert f"`{key}`" in doc, key


def test_example_2(doc: str) -> None:
    counts = np.array([0, 5, 3, 1200, 2, 100])
    assert rle.counts_to_string(counts) == b"053[U1OdmN"
    assert "`053[U1OdmN`" in doc


def test_python_decoder_from_the_doc(doc: str) -> None:
    code = _block(doc, "python", "def rle_decode")
    namespace: dict = {}
    exec(code.split("sock = ")[0], namespace)  # the function only, not the receive loop
    for mask in _vectors():
        h, w = mask.shape
        flat = namespace["rle_decode"](rle.encode(mask), h, w)
        assert np.array_equal(np.frombuffer(flat, np.uint8).reshape(w, h).T, mask)


@pytest.mark.skipif(shutil.which("node") is None, reason="node (JavaScript) not installed")
def test_javascript_decoder_from_the_doc(doc: str, tmp_path: Path) -> None:
    code = _block(doc, "js", "// rle-decode")
    cases = [
        {"s": rle.encode(m).decode(), "h": m.shape[0], "w": m.shape[1], "m": m.ravel().tolist()}
        for m in _vectors()
    ]
    script = tmp_path / "t.js"
    script.write_text(
        code
        + "\nconst cases = "
        + json.dumps(cases)
        + ";\nlet bad = 0;\nfor (const c of cases) {\n"
        + "  const got = rleDecode(Buffer.from(c.s, 'ascii'), c.h, c.w);\n"
        + "  if (got.length !== c.m.length || got.some((v, i) => v !== c.m[i])) bad++;\n"
        + "}\nlet threw = 0;\nfor (const s of ['`', '0p', '5']) {\n"
        + "  try { rleDecode(Buffer.from(s), 2, 2); } catch (e) { threw++; }\n}\n"
        + "console.log(JSON.stringify({bad, threw}));\n"
    )
    out = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"bad": 0, "threw": 3}


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_c_decoder_from_the_doc(doc: str, tmp_path: Path) -> None:
    code = _block(doc, "c", "/* rle-decode")
    main = r"""
#include <stdio.h>
int main(void) {
    static uint8_t s[4000000], out[4000000];
    unsigned h, w; size_t n; int bad = 0, cases = 0;
    while (scanf("%u %u %zu", &h, &w, &n) == 3) {
        getchar();
        if (fread(s, 1, n, stdin) != n) return 2;
        int rc = rle_decode(s, n, h, w, out);
        cases++;
        if (rc != 0) { bad++; continue; }
        for (size_t i = 0; i < (size_t)h * w; i++) putchar('0' + out[i]);
        putchar('\n');
    }
    fprintf(stderr, "%d %d\n", cases, bad);
    return bad;
}
"""
    src = tmp_path / "t.c"
    src.write_text(code + main)
    exe = tmp_path / "t"
    build = subprocess.run(
        ["cc", "-std=c99", "-Wall", "-Werror", "-O1", "-o", str(exe), str(src)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert build.returncode == 0, build.stderr
    masks = _vectors()
    feed = b"".join(
        f"{m.shape[0]} {m.shape[1]} {len(rle.encode(m))}\n".encode() + rle.encode(m) for m in masks
    )
    run = subprocess.run([str(exe)], input=feed, capture_output=True, timeout=60)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.decode().split("\n")
    for m, line in zip(masks, lines):
        assert line == "".join(map(str, m.ravel().tolist()))
    for bad in (b"`", b"0p", b"5"):
        run = subprocess.run([str(exe)], input=b"2 2 %d\n" % len(bad) + bad, capture_output=True)
        assert run.returncode == 1


def test_reader_limits_table_matches_the_code(doc: str) -> None:
    """docs/protocol.md's table of reader limits states SubscriberLimits' defaults."""
    import dataclasses

    from segcam.publish.limits import SubscriberLimits

    section = doc.split("### Limits a reader applies", 1)[1]
    rows = dict(re.findall(r"^\| `(max_\w+)` \| (\d+) \|", section, flags=re.M))
    defaults = {f.name: f.default for f in dataclasses.fields(SubscriberLimits)}
    assert {k: int(v) for k, v in rows.items()} == defaults
