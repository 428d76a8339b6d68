"""Client intake: a fake engine (separate process) floods n data_messages; the client polls
`.data` (arg 2 = poll) or sleeps. Run: .venv/bin/python benchmarks/client_intake.py 300000 poll
"""
import sys, time, tempfile, subprocess, json
from pathlib import Path
HERE = str(Path(__file__).resolve().parents[1] / "tests" / "client")
sys.path.insert(0, HERE)
import corral
n = int(sys.argv[1]); poll = sys.argv[2] == "poll"
tmp = Path(tempfile.mkdtemp())
server = subprocess.Popen([sys.executable, "-c", f"""
import sys, time, json; sys.path.insert(0, {HERE!r})
from pathlib import Path
from fake_controller import FakeController
with FakeController(Path({str(tmp)!r}), {n}) as fc:
    while not hasattr(fc, 't_sent'): time.sleep(0.01)
    time.sleep(1)
    print(json.dumps([fc.t_send, fc.t_sent]), flush=True)
"""], stdout=subprocess.PIPE)
try:
    while not (tmp / "security/ipcontroller-client.json").exists(): time.sleep(0.05)
    time.sleep(0.2)
    with corral.Client(profile_dir=tmp) as c:
        ar = c[0].apply_async(max, 1, 2)
        reads = 0; distinct = set()
        while not ar.ready():
            if poll:
                d = ar.data; reads += 1
                if d: distinct.add(d["i"])
            else:
                time.sleep(0.001)
        t_ready = time.perf_counter()
        assert ar.get() == n and ar.data == {"i": n-1}
        md = ar.metadata
        t_send, t_sent = json.loads(server.stdout.readline())
        print(f"n={n} poll={poll}: sender {n/(t_sent-t_send):,.0f} msg/s; ready {t_ready-t_sent:.3f}s after last send; intake {n/(t_ready-t_send):,.0f} msg/s; received {md['data_messages']:,}; .data reads {reads:,}, distinct values {len(distinct):,}")
finally:
    server.wait(10)
