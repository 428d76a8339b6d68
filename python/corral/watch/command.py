"""`corral watch MSG_ID...` and `corral watch --cluster`: options, connection and the
refresh loop. A terminal gets a rich ``Live`` view redrawn in place; anything else (a pipe,
a file, or rich not installed) gets plain lines, printed when something changes."""

from __future__ import annotations

import argparse
import sys
import time

from corral import error
from corral.watch import model, render

#: At most this many task redraws a second, however fast tasks publish (newest wins).
MAX_REDRAWS_PER_SECOND = 10

#: Exit codes: the task failed; nothing to watch (no cluster, unknown msg_id); the
#: controller went away while watching.
TASK_FAILED, CANNOT_WATCH, CONTROLLER_LOST = 1, 2, 3


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="corral watch",
        description="follow the data tasks publish (any client's task, by msg_id), or the "
                    "cluster's engines, live in a terminal; exits when the tasks end")
    p.add_argument("msg_ids", nargs="*", metavar="MSG_ID", help="the task(s) to follow")
    p.add_argument("--cluster", action="store_true",
                   help="show the engines, their queues and running tasks instead (Ctrl-C exits)")
    p.add_argument("--once", action="store_true", help="print one snapshot and exit")
    p.add_argument("--plain", action="store_true",
                   help="plain lines even on a terminal (the default when stdout is not one)")
    p.add_argument("--interval", type=float, default=None,
                   help="seconds between refreshes when nothing is published (ages, the "
                        "task's end); new data is shown as it arrives (default: 0.5; 1 with "
                        "--cluster)")
    p.add_argument("--profile", default=None, help="IPython profile name (default: default)")
    p.add_argument("--profile-dir", default=None, help="IPython profile directory")
    p.add_argument("--cluster-id", default=None, help="cluster id (default: none)")
    p.add_argument("--url-file", default=None,
                   help="the cluster's client connection file (ipcontroller-client.json)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the controller")
    return p


def _use_rich(args) -> bool:
    if args.plain or not sys.stdout.isatty():
        return False
    try:
        import rich  # noqa: F401
    except ImportError:
        print("(plain output: install rich, `pip install corral[watch]`, for the live view)",
              file=sys.stderr)
        return False
    return True


def _console():
    from rich.console import Console

    return Console()


def _print_lines(lines: list[str], gap: bool = False) -> None:
    """One frame; ``gap``: a blank line after it, so frames of several rows stand apart."""
    print("\n".join(lines + ([""] if gap else [])), flush=True)


def _outcome(frame: model.TaskFrame) -> int:
    """Print how the task ended; the exit code."""
    if frame.errors:
        return TASK_FAILED
    for result in frame.results:
        print(f"result: {render.fmt(repr(result))}", flush=True)
    return 0


class _News:
    """Waits for the next publication of the watched tasks (the client's I/O thread wakes
    it, no polling) or ``interval`` seconds, whichever comes first, and spaces redraws."""

    def __init__(self, client, ar, interval: float):
        self.client, self.ar, self.interval = client, ar, interval
        self.seen = 0
        self.last = time.monotonic()

    def wait(self) -> None:
        gap = 1.0 / MAX_REDRAWS_PER_SECOND - (time.monotonic() - self.last)
        if gap > 0:
            time.sleep(gap)
        self.seen, _ = self.client._wait_data(self.ar.msg_ids, self.seen, self.interval)
        self.last = time.monotonic()


def watch_task(client, args) -> int:
    model.check_known(client, args.msg_ids)
    ar = client.get_result(args.msg_ids[0] if len(args.msg_ids) == 1 else args.msg_ids)
    title = ", ".join(args.msg_ids)
    frame = model.task_frame(ar)
    rich = _use_rich(args)
    if args.once:
        if rich:
            _console().print(render.task_view(frame, title))
        else:
            _print_lines(render.task_lines(frame))
        return TASK_FAILED if frame.errors else 0
    news = _News(client, ar, args.interval)
    if rich:
        from rich.live import Live

        console = _console()
        with Live(render.task_view(frame, title), console=console, auto_refresh=False) as live:
            while not frame.done:
                news.wait()
                frame = model.task_frame(ar)
                live.update(render.task_view(frame, title), refresh=True)
    else:
        gap = len(frame.rows) > 1
        _print_lines(render.task_lines(frame), gap)
        while not frame.done:
            news.wait()
            previous, frame = frame, model.task_frame(ar)
            if frame.changed_since(previous):
                _print_lines(render.task_lines(frame), gap)
    return _outcome(frame)


def watch_cluster(client, args) -> int:
    title = client.url_file or "cluster"
    frame = model.cluster_frame(client)
    rich = _use_rich(args)
    if args.once:
        if rich:
            _console().print(render.cluster_view(frame, title))
        else:
            _print_lines(render.cluster_lines(frame))
        return 0
    if rich:
        from rich.live import Live

        with Live(render.cluster_view(frame, title), console=_console(),
                  auto_refresh=False) as live:
            while True:
                time.sleep(args.interval)
                live.update(render.cluster_view(model.cluster_frame(client), title),
                            refresh=True)
    last = None
    while True:
        lines = render.cluster_lines(frame)
        if lines != last:
            _print_lines(lines, gap=True)
            last = lines
        time.sleep(args.interval)
        frame = model.cluster_frame(client)


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.interval is None:
        # A cluster view asks for every engine's queue lists: once a second is plenty.
        args.interval = 1.0 if args.cluster else 0.5
    if args.cluster == bool(args.msg_ids):
        parser().print_usage(sys.stderr)
        print("corral watch: give a task's msg_id (see `corral watch --cluster` for running "
              "tasks) or --cluster, not both", file=sys.stderr)
        return CANNOT_WATCH
    from corral.client.client import Client

    try:
        client = Client(url_file=args.url_file, profile=args.profile,
                        profile_dir=args.profile_dir, cluster_id=args.cluster_id,
                        timeout=args.timeout)
    except (FileNotFoundError, TimeoutError, ValueError) as e:
        print(f"corral watch: {e}", file=sys.stderr)
        return CANNOT_WATCH
    try:
        return watch_cluster(client, args) if args.cluster else watch_task(client, args)
    except model.UnknownTask as e:
        print(f"corral watch: {e}", file=sys.stderr)
        return CANNOT_WATCH
    except error.ControllerLost as e:
        print(f"corral watch: lost the controller: {e}", file=sys.stderr)
        return CONTROLLER_LOST
    except KeyboardInterrupt:
        return 0  # Ctrl-C: the user is done watching
    finally:
        client.close()
