"""Starting and stopping clusters: `corral.Cluster` and the `corral` command."""

from corral.cluster.cluster import Cluster

__all__ = ["Cluster"]
