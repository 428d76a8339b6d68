"""``AsyncResult.stream_output()``: output shown while tasks run, not only once they end."""

import time


def print_slowly():
    import sys
    import time

    print("first line", flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    time.sleep(3)
    print("last line", flush=True)
    return 7


def test_output_is_shown_while_the_task_runs(start_cluster, capsys):
    _, c = start_cluster(2)
    ar = c[:].apply_async(print_slowly)
    seen = errs = ""
    with ar.stream_output():
        deadline = time.monotonic() + 20
        while "first line" not in seen.split("[stdout:1]")[-1] and time.monotonic() < deadline:
            time.sleep(0.05)
            out, err = capsys.readouterr()
            seen, errs = seen + out, errs + err
        running_when_seen = not ar.done()
        assert ar.get(timeout=30) == [7, 7]
    out, err = capsys.readouterr()
    seen, errs = seen + out, errs + err
    assert running_when_seen, "output came only after the tasks ended"
    for engine in (0, 1):
        assert f"[stdout:{engine}]" in seen
        assert f"[stderr:{engine}]" in errs
    assert seen.count("first line") == 2 and seen.count("last line") == 2


def test_output_of_a_finished_task_is_shown_on_entering(start_cluster, capsys):
    _, c = start_cluster(1)
    ar = c[0].apply_async(print, "all done")
    ar.get(timeout=30)
    with ar.stream_output():
        pass
    assert capsys.readouterr().out == "[stdout:0] \nall done\n"
