"""corral's payload format, and stock ipyparallel payloads decoded without its help."""

import numpy as np
import pytest
from ipyparallel.serialize import pack_apply_message as ipp_pack
from ipyparallel.serialize import serialize_object as ipp_serialize

from corral.serialize import (
    deserialize_object,
    is_ipyparallel_payload,
    pack_apply_message,
    serialize_object,
    unpack_apply_message,
)


def test_large_arrays_travel_as_their_own_frame_without_copy():
    a = np.arange(1000, dtype="f8")
    frames = serialize_object(dict(a=a, i=3))
    assert len(frames) == 2
    assert frames[1].nbytes == a.nbytes
    obj, rest = deserialize_object([bytes(f) for f in frames])
    assert rest == []
    assert obj["i"] == 3
    np.testing.assert_array_equal(obj["a"], a)


def test_small_values_stay_in_the_pickle():
    frames = serialize_object(dict(a=np.arange(3), s="hi"))
    assert len(frames) == 1


def test_in_band_frames_are_plain_pickles():
    import pickle

    frames = serialize_object(np.arange(1000), out_of_band=False)
    assert len(frames) == 1
    np.testing.assert_array_equal(pickle.loads(frames[0]), np.arange(1000))


def test_apply_message_round_trip_with_closure_and_kwargs():
    k = 10

    def f(x, y=1):
        return x * k + y

    frames = pack_apply_message(f, (np.ones(500),), dict(y=2))
    g, args, kwargs = unpack_apply_message([bytes(x) for x in frames])
    assert g(*args, **kwargs).sum() == 500 * 12


def test_unpack_rejects_too_few_frames():
    with pytest.raises(ValueError, match="at least 2 frames"):
        unpack_apply_message([b"x"])


def test_decodes_stock_ipyparallel_apply_payload():
    def add(a, b=0):
        return a + b

    frames = ipp_pack(add, (np.arange(400, dtype="i8"),), dict(b=5))
    assert is_ipyparallel_payload(frames)
    assert not is_ipyparallel_payload(pack_apply_message(add, (1,)))
    f, args, kwargs = unpack_apply_message([bytes(x) for x in frames], g={})
    assert list(f(*args, **kwargs)[:3]) == [5, 6, 7]


def test_decodes_stock_ipyparallel_data_and_bytes():
    frames = ipp_serialize(dict(a=np.arange(300.0), b=b"x" * 2000, i=4))
    obj, rest = deserialize_object([bytes(x) for x in frames])
    assert rest == []
    assert obj["i"] == 4 and obj["b"] == b"x" * 2000
    np.testing.assert_array_equal(obj["a"], np.arange(300.0))


def test_top_level_arrays_and_references_are_written_as_stock_ipyparallel_cans_them():
    """Stock engines read a corral client's large array (one frame, no copy) and Reference."""
    from ipyparallel.serialize import deserialize_object as ipp_deserialize

    import corral

    a = np.arange(1000.0).reshape(10, 100)
    frames = serialize_object(a)
    assert len(frames) == 2 and frames[1].nbytes == a.nbytes
    assert frames[1].obj is a or np.shares_memory(np.asarray(frames[1]), a)
    for read in (ipp_deserialize, deserialize_object):
        obj, rest = read([bytes(x) for x in frames])
        assert rest == []
        np.testing.assert_array_equal(obj, a)
        assert read(serialize_object(corral.Reference("x")), {"x": 7})[0] == 7
    # Arrays numpy cannot hand over as they are keep corral's own path.
    for odd in (a.T, np.array([object()] * 300), np.zeros(300, dtype="i8,f8")):
        assert deserialize_object(serialize_object(odd))[0].shape == odd.shape
