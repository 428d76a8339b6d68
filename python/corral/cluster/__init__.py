"""Starting and stopping clusters: `corral.Cluster`, `corral.ClusterManager`, launchers by
name (`Cluster(engines='mpi')`), and the `corral cluster` command."""

from corral.cluster.cluster import Cluster
from corral.cluster.manager import ClusterManager, clean_cluster_files

__all__ = ["Cluster", "ClusterManager", "clean_cluster_files"]
