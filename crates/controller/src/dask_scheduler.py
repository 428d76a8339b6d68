"""The dask.distributed scheduler a corral controller runs for `become_dask_request`.

corral's controller has no Python in it, so where ipyparallel's hub starts a `Scheduler` in
its own process, corral's starts this script (`python -c <this file> <kwargs as JSON>
<that python>`) with the Python it was told to use. It needs only `distributed`, not corral.

It reports once, as one JSON line on stdout: `{"status": "ok", "ip", "address", "port"}`
or an error reply's content (`ename`, `evalue`, `traceback`). Then it serves until its stdin
reaches end of file (the controller closed it, or died and the kernel closed it: the
scheduler never outlives its controller), SIGTERM, or the scheduler closing itself.
"""

import asyncio
import json
import signal
import sys
import traceback


def report(out, content):
    out.write(json.dumps(content) + "\n")
    out.flush()


def error(exc, hint=""):
    return {
        "status": "error",
        "ename": type(exc).__name__,
        "evalue": f"{exc}{hint}",
        "traceback": traceback.format_exception(type(exc), exc, exc.__traceback__),
    }


async def serve(kwargs, out):
    from distributed import Scheduler

    try:
        scheduler = Scheduler(**kwargs)
        await scheduler.start()
    except Exception as e:
        report(out, error(e))
        return 1
    report(out, {
        "status": "ok",
        "ip": scheduler.ip,
        "address": scheduler.address,
        "port": scheduler.port,
    })
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_stdin():
        if not sys.stdin.buffer.read1(4096):
            stop.set()

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    stopped = asyncio.ensure_future(stop.wait())
    finished = asyncio.ensure_future(scheduler.finished())
    await asyncio.wait([stopped, finished], return_when=asyncio.FIRST_COMPLETED)
    if not finished.done():
        await scheduler.close(reason="corral controller stopped the scheduler")
    return 0


def main():
    # Ctrl-C in the controller's terminal reaches this process too: the controller decides
    # when it ends (by closing stdin), so that a stop is always a clean one.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = sys.stdout
    # Only the one report line goes to stdout (a pipe the controller stops reading).
    sys.stdout = sys.stderr
    try:
        kwargs = json.loads(sys.argv[1])
        import distributed  # noqa: F401
    except ImportError as e:
        python = sys.argv[2] if len(sys.argv) > 2 else sys.executable
        hint = (f" (in {python}, the Python this controller runs): install "
                "dask[distributed] there, or start the controller with --python naming a "
                "Python that has it")
        report(out, error(e, hint))
        return 1
    except Exception as e:
        report(out, error(e))
        return 1
    return asyncio.run(serve(kwargs, out))


if __name__ == "__main__":
    sys.exit(main())
