"""`corral.ClusterManager`: the clusters recorded in profile directories, as ipyparallel's
ClusterManager lists them; `clean_cluster_files` removes what dead clusters left behind."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from corral import connection as profiles
from corral.cluster.cluster import Cluster

log = logging.getLogger("corral.cluster")


def all_profile_dirs() -> list[Path]:
    """Every `profile_*` directory of the IPython dir (`$IPYTHONDIR`, default ~/.ipython)."""
    ipython_dir = Path(os.environ.get("IPYTHONDIR") or Path.home() / ".ipython").expanduser()
    return sorted(p for p in ipython_dir.glob("profile_*") if p.is_dir())


def cluster_files(profile_dir: str | os.PathLike) -> list[Path]:
    return sorted((Path(profile_dir) / "security").glob("cluster-*.json"))


def _profile_dirs(profile_dirs=None, profile_dir=None, profiles_=None, profile=None) -> list[Path]:
    if profile_dirs is not None:
        return [Path(p) for p in profile_dirs]
    if profile_dir is not None:
        return [Path(profile_dir)]
    names = profiles_ if profiles_ is not None else ([profile] if profile is not None else None)
    if names is not None:
        return [profiles.resolve_profile_dir(name) for name in names]
    return all_profile_dirs()


def cluster_logs(profile_dir: Path, cluster_id: str) -> list[Path]:
    """The logs `Cluster` wrote for `cluster_id`: `corral-<role>-<id>-<pid>-<ns>.log`."""
    pattern = re.compile(rf"corral-[a-z]+-{re.escape(cluster_id or 'default')}-\d+-\d+\.log")
    log_dir = profiles.log_dir(profile_dir)
    return sorted(p for p in log_dir.glob("corral-*.log") if pattern.fullmatch(p.name))


class ClusterManager:
    """Clusters by key `<profile>:<cluster_id>`, loaded from their cluster files."""

    def __init__(self) -> None:
        self.clusters: dict[str, Cluster] = {}

    @staticmethod
    def cluster_key(cluster: Cluster) -> str:
        name = cluster.profile_dir.name
        profile = name[len("profile_"):] if name.startswith("profile_") else str(cluster.profile_dir)
        return f"{profile}:{cluster.cluster_id}"

    def load_clusters(self, *, profile_dirs=None, profile_dir=None, profiles=None, profile=None) -> dict[str, Cluster]:
        """Read every cluster file of the given profiles (default: all IPython profiles);
        clusters whose processes are all gone are listed too (`is_running()` is False)."""
        for key, cluster in list(self.clusters.items()):
            if cluster.controller and not cluster.is_running():
                del self.clusters[key]
        for d in _profile_dirs(profile_dirs, profile_dir, profiles, profile):
            for path in cluster_files(d):
                try:
                    cluster = Cluster.from_file(path)
                except Exception as e:  # a torn or foreign file must not hide the others
                    log.warning("cannot read cluster file %s: %s", path, e)
                    continue
                self.clusters.setdefault(self.cluster_key(cluster), cluster)
        return self.clusters

    def new_cluster(self, **kwargs) -> tuple[str, Cluster]:
        cluster = Cluster(**kwargs)
        key = self.cluster_key(cluster)
        if key in self.clusters:
            raise KeyError(f"cluster {key} already exists")
        self.clusters[key] = cluster
        return key, cluster

    def get_cluster(self, key: str) -> Cluster:
        return self.clusters[key]

    def remove_cluster(self, key: str) -> None:
        del self.clusters[key]


def clean_cluster_files(profile_dirs=None, *, force: bool = False) -> list[Path]:
    """Remove the files of clusters whose controller no longer runs (cluster file,
    connection files, logs), stopping any engines they left; returns what was removed.
    A cluster whose controller runs is kept unless `force` (then it is stopped first)."""
    removed: list[Path] = []
    dirs = [Path(p) for p in profile_dirs] if profile_dirs is not None else all_profile_dirs()
    for d in dirs:
        for path in cluster_files(d):
            try:
                cluster = Cluster.from_file(path)
            except Exception:
                cluster = None
            if cluster is not None and cluster.controller and cluster.controller.running() and not force:
                continue
            cluster_id = cluster.cluster_id if cluster else path.stem[len("cluster-"):]
            doomed = [path, profiles.connection_file(d, "client", cluster_id),
                      profiles.connection_file(d, "engine", cluster_id), *cluster_logs(d, cluster_id)]
            doomed = [f for f in doomed if f.exists()]
            if cluster is not None:
                # Engines outliving their controller serve no one: stop them (by recorded
                # pid and start time, so only processes this cluster started).
                cluster.stop_cluster_sync()
            for f in doomed:
                f.unlink(missing_ok=True)
            removed += doomed
    return removed
