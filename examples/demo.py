"""`make demo`: the data-publication flow on a local 4-engine corral cluster.

Starts the cluster with `corral cluster start -n 4 --daemonize`, connects with
`corral.Client()` (which finds the cluster's connection file in the default profile), runs
`publish_it` and `simulation_loop` on every engine, prints each engine's latest `i` as it
changes, saves a plot of `ar.data` to `data_publication.png`, and stops the cluster.
"""

import subprocess
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import corral as ipp  # noqa: E402


def publish_it():
    from corral.datapub import publish_data

    publish_data(dict(a="hi"))


def simulation_loop():
    import time

    import numpy as np

    from corral.datapub import publish_data

    for i in range(10):
        publish_data(dict(a=np.random.rand(20), i=i))
        time.sleep(1)


def corral(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "corral", *args], check=True)


def main() -> None:
    t_start = time.perf_counter()
    corral("cluster", "start", "-n", "4", "--daemonize")
    try:
        c = ipp.Client()
        print(f"connected: engines {c.ids} ({time.perf_counter() - t_start:.2f} s after start)")
        dv = c[:]
        dv.block = False

        ar = dv.apply_async(publish_it)
        ar.get()
        print("publish_it ->", ar.data)

        ar = dv.apply_async(simulation_loop)
        print("simulation_loop: latest i per engine, as it changes")
        t0 = time.perf_counter()
        last = None
        while True:
            latest = [d.get("i") for d in ar.data]
            if latest != last:
                print(f"  t={time.perf_counter() - t0:5.2f}s  i={latest}")
                last = latest
            if ar.ready():
                break
            time.sleep(0.01)
        ar.get()
        final = [d["i"] for d in ar.data]
        print(f"done: final i per engine {final} (ar.data was final when get() returned)")

        data = ar.data
        for i, d in enumerate(data):
            plt.plot(d["a"], label="engine: " + str(i))
        plt.title("Data published at time step: " + str(data[0]["i"]))
        plt.legend()
        plt.savefig("data_publication.png")
        print("plot saved to data_publication.png")
        c.close()
    finally:
        corral("cluster", "stop")
    print(f"demo finished in {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
