"""setup.py's OpenCV choice: never a wheel by default; gui, headless, system-opencv extras."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _setup_kwargs() -> dict:
    """install_requires and extras_require as written in setup.py (markers evaluated)."""
    tree = ast.parse((REPO / "setup.py").read_text())
    consts = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            consts[node.targets[0].id] = node.value.value
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    call = next(n for n in calls if getattr(n.func, "id", "") == "setup")
    out = {}
    for kw in call.keywords:
        if kw.arg in ("install_requires", "extras_require"):
            unparse = getattr(ast, "unparse", None)  # Python 3.9+
            src = unparse(kw.value) if unparse is not None else None
            if src is None:
                continue
            out[kw.arg] = eval(src, {}, consts)  # noqa: S307 - our own setup.py literals
    return out


def test_no_opencv_wheel_is_required_by_default() -> None:
    kw = _setup_kwargs()
    if not kw:
        pytest.skip("ast.unparse needs Python 3.9+")
    assert not [r for r in kw["install_requires"] if r.startswith("opencv")]
    extras = kw["extras_require"]
    assert extras["gui"][0].startswith("opencv-python>=")
    assert extras["headless"][0].startswith("opencv-python-headless>=")
    assert extras["system-opencv"] == ["numpy<2"]
    # no other extra brings an OpenCV wheel along (it would mix with the chosen one)
    for name, reqs in extras.items():
        if name not in ("gui", "headless", "opencv"):
            assert not [r for r in reqs if r.startswith("opencv")], name
