"""Starting and stopping clusters: the `corral` command and `corral.Cluster`."""
