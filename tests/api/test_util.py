"""`corral.util`: what user code imports from `ipyparallel.util` (ipyparallel's
inter-engine examples connect engines with `disambiguate_url`)."""

import socket

import pytest

from corral import util


def test_disambiguate_url_makes_wildcards_connectable():
    assert util.disambiguate_url("tcp://*:5555") == "tcp://127.0.0.1:5555"
    assert util.disambiguate_url("tcp://0.0.0.0:5555") == "tcp://127.0.0.1:5555"
    assert util.disambiguate_url("tcp://10.1.2.3:5555") == "tcp://10.1.2.3:5555"
    assert util.disambiguate_url("ipc:///tmp/x") == "ipc:///tmp/x"
    # A wildcard on another machine is reached at that machine's address; one on this
    # machine through the loopback interface.
    assert util.disambiguate_url("tcp://*:1", "10.9.8.7") == "tcp://10.9.8.7:1"
    assert util.disambiguate_url("tcp://*:1", socket.gethostname()) == "tcp://127.0.0.1:1"
    assert util.disambiguate_url("tcp://*:1", "127.0.0.5") == "tcp://127.0.0.1:1"
    assert util.disambiguate_ip_address("::", "::1") == "127.0.0.1"


def test_url_helpers():
    assert util.is_url("tcp://127.0.0.1:1") and not util.is_url("127.0.0.1:1")
    assert util.split_url("tcp://[::1]:5") == ("tcp", "::1", "5")
    assert util.validate_url("tcp://127.0.0.1:80") and util.validate_url("inproc://x")
    for bad in ["tcp://127.0.0.1:http", "tcp://127.0.0.1:70000", "nope"]:
        with pytest.raises(ValueError):
            util.validate_url(bad)
    assert util.is_ip("127.0.0.1") and util.is_ip("::1") and not util.is_ip("localhost")
    assert util.is_loopback("localhost") and util.is_loopback("127.0.0.2")
    assert util.is_loopback("::1") and not util.is_loopback("10.0.0.1")
    assert util.is_this_machine(None) and util.is_this_machine(socket.gethostname())
    assert util.is_this_machine("127.0.0.1")


def test_random_ports_int_keys_and_interactive():
    ports = util.select_random_ports(3)
    assert len(set(ports)) == 3 and all(0 < p < 65536 for p in ports)
    assert util.int_keys({"1": "a", "x": "b"}) == {1: "a", "x": "b"}
    with pytest.raises(KeyError):
        util.int_keys({"1": "a", 1: "b"})

    def f():
        return 1

    assert util.interactive(f).__module__ == "__main__"
