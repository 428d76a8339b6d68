"""`corral.engine.data_preview`: the JSON summary of published values that the engine
sends as `corral_preview` for the controller's dashboard (docs/PROTOCOL.md §13)."""

from __future__ import annotations

import json
import time

import numpy as np

from corral.engine.data_preview import MAX_POINTS_1D, MAX_SIDE_2D, preview_json, summarize


def test_scalars_strings_and_other_objects():
    assert summarize(3) == {"type": "number", "value": 3}
    assert summarize(np.float32(0.5)) == {"type": "number", "value": 0.5}
    assert summarize(True) == {"type": "number", "value": True}
    assert summarize(float("nan")) == {"type": "number", "value": "nan"}
    assert summarize("x" * 1000)["value"] == "x" * 200
    assert summarize({"a": 1}) == {"type": "other", "class": "dict"}


def test_arrays_are_previewed_by_striding_and_reduced_only_when_small():
    s = summarize(np.arange(1000.0))
    assert (s["shape"], s["dtype"], s["stride"]) == ([1000], "float64", 4)
    assert len(s["preview"]) <= MAX_POINTS_1D and s["preview"][:2] == [0.0, 4.0]
    assert (s["min"], s["max"]) == (0.0, 999.0)
    s = summarize(np.ones((100, 70), dtype=np.int32))
    assert len(s["preview"]) <= MAX_SIDE_2D and len(s["preview"][0]) <= MAX_SIDE_2D
    big = summarize(np.zeros(1 << 20))
    assert "min" not in big and len(big["preview"]) <= MAX_POINTS_1D
    s = summarize(np.array([1.0, np.nan, np.inf]))
    assert s["preview"] == [1.0, None, None] and s["max"] == "inf"
    assert "preview" not in summarize(np.zeros((2, 2, 2)))
    assert "preview" not in summarize(np.array(["a"]))


def test_the_preview_is_json_and_cheap_for_an_8_mb_array():
    data = {"value": 1, "big": np.random.default_rng(0).random(1 << 20)}  # 8 MB
    assert json.loads(preview_json(data))["big"]["shape"] == [1 << 20]
    start = time.perf_counter()
    for _ in range(20):
        preview_json(data)
    per_call = (time.perf_counter() - start) / 20
    print(f"preview_json of an 8 MB array: {per_call * 1e6:.0f} µs")
    assert per_call < 0.05, "a sanity bound: the preview reads ~256 points, not 8 MB"


def test_a_failing_summary_does_not_stop_publishing():
    class Weird:
        @property
        def __class__(self):
            raise RuntimeError("no")

    assert preview_json({"w": Weird()}) is None
