"""%px --progress-after counts the items tasks publish ({'progress': k, 'total': n}),
summed over engines, as wait_interactive does."""

from __future__ import annotations

import re
import sys

from IPython.utils.capture import capture_output


def test_px_progress_after_counts_published_items(shell, start_cluster, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    _, client = start_cluster(2)
    code = ("import time\nfrom corral.datapub import publish_data\n"
            "for k in range(25):\n    time.sleep(0.04)\n"
            "    publish_data({'progress': k + 1, 'total': 25})\n")
    with capture_output(display=False) as io:
        shell.run_cell_magic("px", "--no-stream --progress-after 0", code)
    assert "50/50 items done" in io.stdout, io.stdout
    counts = {int(n) for n in re.findall(r"(\d+)/50 items done", io.stdout)}
    assert any(0 < n < 50 for n in counts), "no intermediate item count"
