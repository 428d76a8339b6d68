"""A connection file with an empty key (no message signing) is refused unless the user
opts in with ``insecure=True`` or ``CORRAL_INSECURE=1``; opting in logs a loud warning."""

from __future__ import annotations

import json
import logging

import pytest
from fake_controller import FakeController

import corral


def _empty_key(fake: FakeController, profile_dir) -> None:
    """Make the fake cluster keyless: its file says key "" and it signs with no key."""
    path = profile_dir / "security" / "ipcontroller-client.json"
    conn = json.loads(path.read_text())
    conn["key"] = ""
    path.write_text(json.dumps(conn))
    fake.key = b""


def test_empty_key_is_refused_with_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("CORRAL_INSECURE", raising=False)
    fake = FakeController(tmp_path, 0)
    _empty_key(fake, tmp_path)
    with fake:
        with pytest.raises(ValueError) as info:
            corral.Client(profile_dir=tmp_path, timeout=10)
    message = str(info.value)
    assert "empty key" in message
    assert "insecure=True" in message and "CORRAL_INSECURE=1" in message


@pytest.mark.parametrize("how", ["kwarg", "env"])
def test_empty_key_opt_in_connects_and_warns(tmp_path, monkeypatch, caplog, how):
    monkeypatch.delenv("CORRAL_INSECURE", raising=False)
    kwargs = {}
    if how == "kwarg":
        kwargs["insecure"] = True
    else:
        monkeypatch.setenv("CORRAL_INSECURE", "1")
    fake = FakeController(tmp_path, 3)
    _empty_key(fake, tmp_path)
    with fake, caplog.at_level(logging.WARNING):
        with corral.Client(profile_dir=tmp_path, timeout=10, **kwargs) as c:
            assert c.ids == [0]
            assert c[0].apply_async(max, 1, 2).get(timeout=30) == 3
    assert any("INSECURE" in r.getMessage() for r in caplog.records)


def test_explicit_insecure_false_beats_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CORRAL_INSECURE", "1")
    fake = FakeController(tmp_path, 0)
    _empty_key(fake, tmp_path)
    with fake:
        with pytest.raises(ValueError, match="empty key"):
            corral.Client(profile_dir=tmp_path, timeout=10, insecure=False)
