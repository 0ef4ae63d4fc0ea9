"""COCO compressed RLE: our numpy codec against pycocotools, byte for byte."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from segcam.errors import ProtocolError
from segcam.publish import rle

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools vs numpy 2

coco = pytest.importorskip("pycocotools.mask", reason="pycocotools is a test dependency")


def _coco_encode(mask: np.ndarray) -> bytes:
    return coco.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"]


def _coco_decode(counts: bytes, h: int, w: int) -> np.ndarray:
    return coco.decode({"size": [h, w], "counts": counts})


EDGE_CASES = [
    np.zeros((1, 1), np.uint8),
    np.ones((1, 1), np.uint8),
    np.zeros((7, 5), np.uint8),
    np.ones((7, 5), np.uint8),
    np.eye(9, dtype=np.uint8),
    np.tile(np.array([[0, 1]], np.uint8), (3, 40)),  # many runs of length 1..3
]


@pytest.mark.parametrize("mask", EDGE_CASES, ids=lambda m: f"{m.shape}-{int(m.sum())}")
def test_edge_cases_match_pycocotools(mask: np.ndarray) -> None:
    h, w = mask.shape
    ours = rle.encode(mask)
    assert ours == _coco_encode(mask)
    assert np.array_equal(rle.decode(ours, h, w), mask)
    assert np.array_equal(_coco_decode(ours, h, w), mask)


def test_person_sized_mask_at_1080p() -> None:
    """Long runs (counts > 2^10, large negative deltas) as a real 1920x1080 mask has."""
    yy, xx = np.mgrid[0:1080, 0:1920]
    mask = (((xx - 960) / 300.0) ** 2 + ((yy - 600) / 450.0) ** 2 < 1).astype(np.uint8)
    mask[0:50, 0:1920:7] = 1  # and some short runs
    ours = rle.encode(mask)
    assert ours == _coco_encode(mask)
    assert np.array_equal(_coco_decode(ours, 1080, 1920), mask)
    assert np.array_equal(rle.decode(ours, 1080, 1920), mask)


masks = st.tuples(st.integers(1, 40), st.integers(1, 40), st.floats(0.0, 1.0)).flatmap(
    lambda t: arrays(np.uint8, (t[0], t[1]), elements=st.integers(0, 1)).map(
        lambda a, p=t[2]: a if p > 0.5 else np.sort(a, axis=0)  # mix noisy and blocky masks
    )
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(masks)
def test_random_masks_match_pycocotools(mask: np.ndarray) -> None:
    h, w = mask.shape
    ours = rle.encode(mask)
    assert ours == _coco_encode(mask)
    assert np.array_equal(rle.decode(ours, h, w), mask)
    assert np.array_equal(_coco_decode(ours, h, w), mask)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 3_000_000), min_size=1, max_size=40))
def test_counts_string_roundtrip_and_pycocotools(counts) -> None:
    """Arbitrary run lengths (large jumps exercise multi-character and negative deltas)."""
    cnts = np.array(counts, dtype=np.int64)
    s = rle.counts_to_string(cnts)
    assert s.decode("ascii")  # printable ASCII only
    assert min(s) >= 48 and max(s) <= 111
    assert np.array_equal(rle.string_to_counts(s), cnts)
    # pycocotools agrees on the counts it reads back from our string.
    total = int(cnts.sum())
    if 0 < total <= 2_000_000:
        assert coco.area({"size": [total, 1], "counts": s}) == int(cnts[1::2].sum())
        assert np.array_equal(
            coco.decode({"size": [total, 1], "counts": s})[:, 0], rle.decode(s, total, 1)[:, 0]
        )


@pytest.mark.parametrize(
    "bad",
    [b" ", b"p", b"0\x7f", b"`", b"1`", b"oooooooo0"],
    ids=["space", "above-alphabet", "del", "unterminated", "unterminated-2", "too-long"],
)
def test_invalid_strings_raise_protocol_error(bad: bytes) -> None:
    with pytest.raises(ProtocolError):
        rle.decode(bad, 4, 4)


def test_wrong_total_raises_protocol_error() -> None:
    s = rle.encode(np.ones((4, 4), np.uint8))
    with pytest.raises(ProtocolError, match="cover"):
        rle.decode(s, 4, 5)


def test_negative_run_raises_protocol_error() -> None:
    # a well-formed string whose 4th run is negative (sum still matches 4x1 pixels)
    s = rle.counts_to_string(np.array([0, 5, 3, -4]))
    with pytest.raises(ProtocolError):
        rle.decode(s, 4, 1)
