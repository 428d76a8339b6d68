"""`corral cluster start|stop`: a local cluster from the shell."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from corral import connection as profiles
from corral.cluster.cluster import Cluster


def _location_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default=None, help="IPython profile name (default: default)")
    parser.add_argument("--profile-dir", default=None, help="IPython profile directory")
    parser.add_argument("--cluster-id", default="", help="cluster id (default: none)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="corral cluster", description="start or stop a local cluster")
    sub = p.add_subparsers(dest="action", required=True)
    start = sub.add_parser("start", help="start a controller and N engines on this machine")
    start.add_argument("-n", "--n", type=int, default=None, help="number of engines (default: CPU count)")
    start.add_argument("--daemonize", action="store_true", help="return once the cluster is up; stop it with `corral cluster stop`")
    start.add_argument("--ip", default="127.0.0.1", help="controller IP (default 127.0.0.1)")
    start.add_argument("--log-level", default="warning")
    start.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the engines")
    start.add_argument(
        "--enable-curve", action="store_true",
        help="encrypt every connection with CurveZMQ (ipyparallel's enable_curve)",
    )
    _location_options(start)
    stop = sub.add_parser("stop", help="stop a cluster started with --daemonize")
    _location_options(stop)
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    profile_dir = profiles.resolve_profile_dir(args.profile, args.profile_dir)
    if args.action == "stop":
        path = profiles.cluster_file(profile_dir, args.cluster_id)
        if not path.exists():
            print(f"no running cluster: {path} does not exist", file=sys.stderr)
            return 1
        record = Cluster.stop_from_file(path)
        print(f"stopped cluster {record['cluster_id']!r}: controller and {len(record['engines'])} engines")
        return 0

    import os

    n = args.n or os.cpu_count() or 1
    cluster = Cluster(
        n=n,
        profile_dir=profile_dir,
        cluster_id=args.cluster_id,
        controller_ip=args.ip,
        log_level=args.log_level,
        engine_timeout=args.timeout,
        detach=args.daemonize,
        shutdown_atexit=not args.daemonize,
        enable_curve=args.enable_curve,
    )
    try:
        client = cluster.start_and_connect_sync()
    except Exception as e:
        cluster.stop_cluster_sync()
        print(f"could not start the cluster: {e}", file=sys.stderr)
        return 1
    ids = client.ids
    client.close()
    print(f"cluster {cluster.cluster_id!r} running: {len(ids)} engines, connection file {cluster.client_file}")
    if args.daemonize:
        print("stop it with: corral cluster stop" + (f" --cluster-id {args.cluster_id}" if args.cluster_id else "")
              + (f" --profile-dir {args.profile_dir}" if args.profile_dir else ""))
        return 0
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        while not stopped.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    cluster.stop_cluster_sync()
    return 0
