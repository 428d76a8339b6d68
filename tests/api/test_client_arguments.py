"""ipyparallel's Client keywords: each is honoured or refused with a message that says what
to do, never silently dropped."""

import json
import logging
import shutil

import pytest

import corral


def test_connection_info_as_a_dict_or_a_path(start_cluster):
    cluster, c = start_cluster(1)
    info = json.loads(cluster.client_file.read_text())
    from_dict = corral.Client(info, timeout=10)
    try:
        assert from_dict.ids == c.ids
        assert from_dict[0].apply_sync(lambda: 7) == 7
    finally:
        from_dict.close()
    positional = corral.Client(str(cluster.client_file), timeout=10)
    try:
        assert positional.ids == c.ids
    finally:
        positional.close()


def test_cluster_and_ipython_dir_find_the_profile(start_cluster, tmp_path):
    cluster, c = start_cluster(1)
    with corral.Client(cluster=cluster, timeout=10) as by_cluster:
        assert by_cluster.ids == c.ids
    # The same files under <ipython_dir>/profile_<name>, found by ipython_dir and profile.
    ipython_dir = tmp_path / "ipython"
    security = ipython_dir / "profile_other" / "security"
    security.mkdir(parents=True)
    shutil.copy(cluster.client_file, security / f"ipcontroller-{cluster.cluster_id}-client.json")
    with corral.Client(ipython_dir=str(ipython_dir), profile="other",
                       cluster_id=cluster.cluster_id, timeout=10) as by_dir:
        assert by_dir.ids == c.ids


def test_debug_turns_on_corral_debug_logging(start_cluster):
    cluster, c = start_cluster(1)
    logger = logging.getLogger("corral")
    before = logger.level
    try:
        with corral.Client(url_file=str(cluster.client_file), debug=True, timeout=10):
            assert logger.getEffectiveLevel() == logging.DEBUG
    finally:
        logger.setLevel(before)


def test_old_url_or_file_keyword_still_connects(start_cluster):
    cluster, c = start_cluster(1)
    with pytest.warns(DeprecationWarning, match="url_or_file"):
        other = corral.Client(url_or_file=str(cluster.client_file), timeout=10)
    with other:
        assert other.ids == c.ids


def test_context_is_ignored_with_a_warning(start_cluster):
    cluster, c = start_cluster(1)
    with pytest.warns(UserWarning, match="Rust core"):
        other = corral.Client(str(cluster.client_file), context=object(), timeout=10)
    with other:
        assert other.ids == c.ids


@pytest.mark.parametrize("keyword", ["password", "paramiko"])
def test_ssh_password_and_paramiko_are_refused_with_what_to_do(tmp_path, keyword):
    """SSH tunnels themselves work (tests/client/test_ssh_tunnel.py), key login only."""
    with pytest.raises(NotImplementedError) as info:
        corral.Client(profile_dir=tmp_path, sshserver="user@host", **{keyword: "secret"})
    assert f"{keyword}=" in str(info.value) and "ssh" in str(info.value)


def test_unknown_keywords_and_bare_urls_are_refused(tmp_path):
    with pytest.raises(TypeError, match="packer"):
        corral.Client(profile_dir=tmp_path, packer="pickle")
    with pytest.raises(ValueError, match="url-files must be used"):
        corral.Client("tcp://127.0.0.1:5555")
