"""`corral cluster start|stop|list|clean|engines`: ipcluster's commands for corral clusters.

Every cluster is recorded in its profile's `security/cluster-<cluster_id>.json`, and its
processes log to `log/corral-<role>-<cluster_id>-*.log` in the profile directory.
"""

from __future__ import annotations

import argparse
import ast
import signal
import sys
import threading

from corral import connection as profiles
from corral.cluster.cluster import Cluster
from corral.cluster.controller_launcher import CONTROLLER_LAUNCHERS
from corral.cluster.launcher import ENGINE_LAUNCHERS
from corral.cluster.manager import ClusterManager, all_profile_dirs, clean_cluster_files


def _location_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default=None, help="IPython profile name (default: default)")
    parser.add_argument("--profile-dir", default=None, help="IPython profile directory")
    parser.add_argument("--cluster-id", default="", help="cluster id (default: none)")


def _engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--n", type=int, default=None, help="number of engines (default: CPU count)")
    parser.add_argument(
        "--engines", default=None, metavar="LAUNCHER",
        help=f"where engines run: {', '.join(sorted(ENGINE_LAUNCHERS))} or module:Class (default: local)",
    )
    parser.add_argument(
        "--engine-option", action="append", default=[], metavar="KEY=VALUE",
        help="an option of the engine launcher, e.g. --engine-option mpi_args=\"['--hostfile','h']\" "
        "or --engine-option auto_restart=True (repeatable; values are Python literals or text)",
    )
    parser.add_argument("--daemonize", action="store_true", help="return once the engines are up; stop with `corral cluster stop`")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the engines")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="corral cluster", description="start, stop, list and clean corral clusters")
    sub = p.add_subparsers(dest="action", required=True)
    start = sub.add_parser("start", help="start a controller and N engines")
    _engine_options(start)
    start.add_argument("--ip", default="127.0.0.1", help="controller IP (default 127.0.0.1)")
    start.add_argument(
        "--enable-curve", action="store_true",
        help="encrypt every connection with CurveZMQ (ipyparallel's enable_curve)",
    )
    start.add_argument("--location", default=None,
                       help="host name or IP written into the connection files (default: this host's name)")
    start.add_argument("--ports", default=None,
                       help="fixed controller ports, taken in order, e.g. 10101-10115")
    start.add_argument("--engine-ports", default=None,
                       help="fixed ports for the sockets engines connect to, e.g. 10201-10209")
    start.add_argument("--client-ports", default=None,
                       help="fixed ports for the sockets clients connect to, e.g. 10301-10307")
    start.add_argument(
        "--controller", default="local", metavar="LAUNCHER",
        help=f"where the controller runs: {', '.join(sorted(CONTROLLER_LAUNCHERS))} or module:Class (default: local)",
    )
    start.add_argument(
        "--controller-option", action="append", default=[], metavar="KEY=VALUE",
        help="an option of the controller launcher, e.g. --controller-option location=user@head "
        "or --controller-option queue=debug (repeatable; values are Python literals or text)",
    )
    start.add_argument("--reuse", action="store_true",
                       help="reuse the key and ports of existing connection files, and leave them on stop")
    _location_options(start)
    engines = sub.add_parser("engines", help="start more engines for a running cluster")
    _engine_options(engines)
    _location_options(engines)
    stop = sub.add_parser("stop", help="stop a cluster (controller and every engine set)")
    _location_options(stop)
    ls = sub.add_parser("list", help="list the clusters of a profile (default: every profile)")
    ls.add_argument("--profile", default=None)
    ls.add_argument("--profile-dir", default=None)
    clean = sub.add_parser("clean", help="remove files (and orphaned engines) of clusters whose controller died")
    clean.add_argument("--profile", default=None)
    clean.add_argument("--profile-dir", default=None)
    clean.add_argument("--force", action="store_true", help="also clusters that still run (their processes are stopped)")
    return p


def launcher_options(pairs: list[str], option: str = "--engine-option") -> dict:
    options = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.isidentifier():
            raise ValueError(f"{option} {pair!r}: write KEY=VALUE")
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    return options


def _wait_for_signal() -> None:
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        while not stopped.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass


def _stop_hint(args) -> str:
    return ("stop it with: corral cluster stop" + (f" --cluster-id {args.cluster_id}" if args.cluster_id else "")
            + (f" --profile-dir {args.profile_dir}" if args.profile_dir else "")
            + (f" --profile {args.profile}" if args.profile else ""))


def start(args) -> int:
    profile_dir = profiles.resolve_profile_dir(args.profile, args.profile_dir)
    existing = profiles.cluster_file(profile_dir, args.cluster_id)
    if existing.exists():
        try:
            running = Cluster.from_file(existing).is_running()
        except Exception:
            running = False
        if running:
            print(f"a cluster with id {args.cluster_id!r} already runs in {profile_dir}; "
                  f"{_stop_hint(args)}, or pick another --cluster-id", file=sys.stderr)
            return 1
    cluster = Cluster(
        n=args.n,
        engines=args.engines or "local",
        engine_launcher_options=launcher_options(args.engine_option),
        controller=args.controller,
        controller_launcher_options=launcher_options(args.controller_option, "--controller-option"),
        profile_dir=profile_dir,
        cluster_id=args.cluster_id,
        controller_ip=args.ip,
        log_level=args.log_level,
        engine_timeout=args.timeout,
        detach=args.daemonize,
        shutdown_atexit=not args.daemonize,
        enable_curve=args.enable_curve,
        controller_location=args.location,
        controller_args=[
            *(["--ports", args.ports] if args.ports else []),
            *(["--engine-ports", args.engine_ports] if args.engine_ports else []),
            *(["--client-ports", args.client_ports] if args.client_ports else []),
            *(["--reuse"] if args.reuse else []),
        ],
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
        print(_stop_hint(args))
        return 0
    _wait_for_signal()
    cluster.stop_cluster_sync()
    return 0


def engines(args) -> int:
    try:
        cluster = Cluster.from_file(profile=args.profile, profile_dir=args.profile_dir, cluster_id=args.cluster_id)
    except FileNotFoundError as e:
        print(f"{e}; start one with `corral cluster start`", file=sys.stderr)
        return 1
    if not (cluster.controller and cluster.controller.running()):
        print(f"the controller of cluster {cluster.cluster_id!r} is not running; `corral cluster clean` "
              "removes its files", file=sys.stderr)
        return 1
    if args.engines:
        cluster.engine_launcher = args.engines
    cluster.engine_launcher_options = launcher_options(args.engine_option)
    cluster.detach = args.daemonize
    cluster.engine_timeout = args.timeout
    cluster.log_level = args.log_level.lower()
    before = sum(s.n for s in cluster.engines.values())
    try:
        set_id = cluster.start_engines_sync(args.n)
        client = cluster.connect_client_sync()
        cluster.wait_for_engines_sync(client, n=before + cluster.engines[set_id].n)
        client.close()
    except Exception as e:
        if "set_id" in locals():
            cluster.stop_engines_sync(set_id)
        print(f"could not start the engines: {e}", file=sys.stderr)
        return 1
    print(f"engine set {set_id!r} of cluster {cluster.cluster_id!r}: {cluster.engines[set_id].n} engine(s)")
    if args.daemonize:
        return 0
    _wait_for_signal()
    cluster.stop_engines_sync(set_id)
    return 0


def stop(args) -> int:
    profile_dir = profiles.resolve_profile_dir(args.profile, args.profile_dir)
    path = profiles.cluster_file(profile_dir, args.cluster_id)
    if not path.exists():
        print(f"no running cluster: {path} does not exist", file=sys.stderr)
        return 1
    cluster = Cluster.from_file(path)
    n_sets = len(cluster.engines)
    n_engines = sum(s.n for s in cluster.engines.values())
    cluster.stop_cluster_sync()
    print(f"stopped cluster {cluster.cluster_id!r}: controller and {n_engines} engines in {n_sets} engine set(s)")
    return 0


def state(cluster: Cluster) -> str:
    controller = bool(cluster.controller and cluster.controller.running())
    engines = sum(s.n for s in cluster.engines.values() if s.running())
    if controller:
        return "running"
    if engines:
        return "controller died"  # engines exit on their own after --controller-grace
    return "dead" if cluster.controller else "stopped"


def list_clusters(args) -> int:
    dirs = ([profiles.resolve_profile_dir(args.profile, args.profile_dir)]
            if args.profile or args.profile_dir else all_profile_dirs())
    clusters = ClusterManager().load_clusters(profile_dirs=dirs)
    rows = [("PROFILE", "CLUSTER ID", "STATE", "ENGINES", "LAUNCHER", "CONTROLLER")]
    for key, cluster in sorted(clusters.items()):
        profile = key.rsplit(":", 1)[0]
        n = sum(s.n for s in cluster.engines.values() if s.running())
        record = cluster.to_dict()
        controller = record.get("controller", {}).get("class", "-")
        rows.append((profile, cluster.cluster_id or "''", state(cluster), str(n), record["engines"]["class"], controller))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def clean(args) -> int:
    dirs = ([profiles.resolve_profile_dir(args.profile, args.profile_dir)]
            if args.profile or args.profile_dir else all_profile_dirs())
    removed = clean_cluster_files(dirs, force=args.force)
    for path in removed:
        print(f"removed {path}")
    if not removed:
        print("nothing to clean")
    return 0


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        return {"start": start, "engines": engines, "stop": stop, "list": list_clusters,
                "clean": clean}[args.action](args)
    except ValueError as e:
        print(f"corral cluster {args.action}: {e}", file=sys.stderr)
        return 2
