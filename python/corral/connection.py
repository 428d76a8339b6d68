"""Where a cluster's files live: the IPython profile directory, as ipyparallel resolves it.

Shared by the client (which reads connection files) and the cluster launcher (which writes
them), so neither imports the other to find them.
"""

from __future__ import annotations

import os
from pathlib import Path


def resolve_profile_dir(profile: str | None = None, profile_dir: str | os.PathLike | None = None) -> Path:
    """An explicit `profile_dir` wins; otherwise `$IPYTHONDIR/profile_<profile>`
    (IPython's default `~/.ipython`, profile `default`)."""
    if profile_dir:
        return Path(profile_dir).expanduser().absolute()
    ipython_dir = os.environ.get("IPYTHONDIR") or os.path.join("~", ".ipython")
    return Path(ipython_dir).expanduser().absolute() / f"profile_{profile or 'default'}"


def connection_file(profile_dir: Path, role: str, cluster_id: str | None = "") -> Path:
    """`<profile_dir>/security/ipcontroller[-<cluster_id>]-<role>.json`."""
    name = f"ipcontroller-{cluster_id}-{role}.json" if cluster_id else f"ipcontroller-{role}.json"
    return Path(profile_dir) / "security" / name


def cluster_file(profile_dir: Path, cluster_id: str | None = "") -> Path:
    """The file where a started cluster records its processes (as ipyparallel does)."""
    return Path(profile_dir) / "security" / f"cluster-{cluster_id or ''}.json"


def log_dir(profile_dir: Path) -> Path:
    return Path(profile_dir) / "log"


def find_connection_file(url_file=None, profile=None, profile_dir=None, cluster_id=None) -> Path:
    """The client connection file a ``Client`` with these arguments would read."""
    if url_file:
        return Path(url_file).expanduser()
    return connection_file(resolve_profile_dir(profile, profile_dir), "client", cluster_id)
