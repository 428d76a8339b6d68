"""Counts the copies of published arrays inside a corral engine: gdb attached to the engine
counts every memcpy/memmove of 1 MiB or more (with a short backtrace each) while a task
publishes 8 MB arrays. Load on the machine does not change the count.

Usage: python benchmarks/engine_copies.py [N]   (N publications, default 5; needs gdb)
Starts its own one-engine cluster on 127.0.0.1 in a temp dir and stops it at the end.
"""

import os
import signal
import subprocess
import sys
import tempfile
import time

import corral

BIG = 1 << 20
# glibc picks one of these at run time (ifunc); breaking on all of them catches it.
COPY_FUNCTIONS = (
    "memcpy", "memmove",
    "__memmove_avx512_unaligned_erms", "__memcpy_avx512_unaligned_erms",
    "__memmove_evex_unaligned_erms", "__memmove_avx_unaligned_erms",
    "__memmove_sse2_unaligned_erms",
)


def engine_pid():
    import os

    return os.getpid()


def publish(n):
    import numpy as np

    from corral.datapub import publish_data

    a = np.ones(2**20)  # 8 MB
    for i in range(n):
        a[0] = i
        publish_data(dict(a=a, i=i))
    return n


def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        cluster = corral.Cluster(n=1, profile_dir=os.path.join(d, "profile"), cluster_id="copies")
        client = cluster.start_and_connect_sync()
        try:
            view = client[0]
            view.apply_sync(publish, 1)  # imports and first allocations happen before counting
            script = os.path.join(d, "gdb.cmd")
            with open(script, "w") as f:
                f.write("set pagination off\nset confirm off\n")
                for fn in COPY_FUNCTIONS:
                    f.write(f"break {fn} if $rdx >= {BIG}\ncommands\nsilent\nbt 5\ncontinue\nend\n")
                f.write("continue\n")
            log_path = os.path.join(d, "gdb.log")
            with open(log_path, "w") as log:
                gdb = subprocess.Popen(
                    ["gdb", "-q", "-p", str(view.apply_sync(engine_pid)), "-x", script],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                )
                time.sleep(8)  # attached, breakpoints set
                ar = view.apply_async(publish, n)
                ar.get(timeout=300)
                deadline = time.monotonic() + 60
                while ar.data.get("i") != n - 1 and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(1)
                gdb.send_signal(signal.SIGINT)  # stop, then quit: gdb detaches
                time.sleep(1)
                gdb.terminate()
                gdb.wait(timeout=30)
            text = open(log_path).read()
            stacks = [s for s in text.split("\n#0 ")[1:]]
            for s in stacks[:2]:
                print("#0 " + s.strip()[:1500], "\n")
            print(f"copies of >= 1 MiB in the engine: {len(stacks)} for {n} publications of 8 MB")
        finally:
            cluster.stop_cluster_sync()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
