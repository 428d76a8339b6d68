"""``LoadBalancedView.imap`` lazy over iterators with ``max_outstanding``,
``view.sync_imports()``, and the top-level ``corral.remote``/``corral.parallel``."""

import itertools

import pytest

import corral
from corral.error import RemoteError


def square(x):
    return x * x


def slow_inverse(x):
    import time

    time.sleep(0.3 if x == 0 else 0.0)
    return 1 / x if x else 0


def test_imap_over_an_infinite_generator_keeps_4_outstanding(client4):
    view = client4.load_balanced_view()
    read = []

    def naturals():
        for i in itertools.count():
            read.append(i)
            yield i

    results = view.imap(square, naturals(), max_outstanding=4)
    assert read == [], "nothing is read before the first result is asked for"
    first = list(itertools.islice(results, 10))
    assert first == [i * i for i in range(10)]
    assert len(read) <= 10 + 4, f"read {len(read)} inputs for 10 results"
    assert max(len(read) - 10, 0) <= 4
    assert len(view.outstanding) <= 4
    results.close()


def test_imap_unordered_auto_and_errors(client4):
    view = client4.load_balanced_view()
    got = list(view.imap(slow_inverse, iter([0, 1, 2, 4]), ordered=False))
    assert sorted(got) == [0, 0.25, 0.5, 1.0]
    assert got[-1] == 0, "the slow one comes last when unordered"
    with pytest.raises(RemoteError):
        list(view.imap(lambda x: 1 / x, [1, 0]))
    mixed = list(view.imap(lambda x: 1 / x, [1, 0], return_exceptions=True))
    assert mixed[0] == 1.0 and isinstance(mixed[1], RemoteError)
    assert list(view.imap(pow, range(5), itertools.repeat(2), max_outstanding=0)) == [
        x ** 2 for x in range(5)]
    with pytest.raises(ValueError, match="max_outstanding"):
        view.imap(square, [1], max_outstanding=-1)


def test_sync_imports_binds_names_on_every_engine(client4, capsys):
    dv = client4[:]
    with dv.sync_imports():
        import json  # noqa: F401
        from os import path as _unused, sep  # noqa: F401
        import email.mime.text  # noqa: F401
    printed = capsys.readouterr().out
    assert "importing json on engine(s)" in printed
    assert "importing path, sep from os on engine(s)" in printed
    dv.execute("ok = (json.dumps([1]), sep, path.basename('/a/b'), "
               "email.mime.text.MIMEText.__name__)", block=True)
    assert dv.pull("ok", block=True) == [("[1]", "/", "b", "MIMEText")] * 4
    with pytest.raises(Exception):
        with client4.load_balanced_view().sync_imports(quiet=True):
            import json as _j  # noqa: F401
            import corral_no_such_module  # noqa: F401
    import builtins
    assert builtins.__import__ is __import__, "the import hook is removed afterwards"


def test_top_level_remote_and_parallel(client4):
    dv = client4[:]

    @corral.remote(dv, block=True)
    def getpid():
        import os

        return os.getpid()

    assert len(set(getpid())) == 4

    @corral.parallel(dv, block=True)
    def double(xs):
        return [2 * x for x in xs]

    assert double(range(8)) == [2 * x for x in range(8)]
    assert corral.parallel(dv, block=True)(square).map(range(5)) == [0, 1, 4, 9, 16]
    assert corral.remote(client4.load_balanced_view(), block=True)(square)(7) == 49
