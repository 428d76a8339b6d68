#!/usr/bin/env bash
# Run ipyparallel's OWN test suite (the one in the installed ipyparallel wheel) with the
# stock client (or corral's, IPP_SUITE_CLIENT=corral), against either the stock controller or
# corral's, and stock or corral engines.
#
#   tests/ipyparallel_suite/run.sh stock  [OUT]   # baseline: everything stock
#   tests/ipyparallel_suite/run.sh corral [OUT]   # corral controller via ipcontroller_shim.py
#   IPP_SUITE_ENGINES=corral tests/ipyparallel_suite/run.sh stock|corral [OUT]
#                                                 # ... with corral engines via ipengine_shim.py
#   IPP_SUITE_CLIENT=corral tests/ipyparallel_suite/run.sh stock|corral [OUT]
#                                                 # ... with corral's client as `ipyparallel.Client`
#
# Needs pytest-asyncio and testpath (the suite's async tests and test deps) in the venv.
# Slow (minutes): not part of the default `pytest` run. Output goes to OUT (default
# ipp-suite-<mode>.log in the current directory); the last line is pytest's summary.
set -u
mode=${1:?usage: run.sh stock|corral [OUT]}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
out=$(realpath -m "${2:-ipp-suite-$mode.log}")
suite=$("$py" -c 'import os, ipyparallel.tests as t; print(os.path.dirname(t.__file__))')
# The tests that run against the shared test cluster (ClusterTestCase) plus the Cluster API's.
files=(test_asyncresult.py test_client.py test_db.py test_dependency.py test_executor.py test_joblib.py
       test_lbview.py test_magics.py test_remotefunction.py test_view.py test_view_broadcast.py
       test_label.py test_cluster.py)
case $mode in
  stock) export IPP_SUITE_CONTROLLER=stock ;;
  corral) export IPP_SUITE_CONTROLLER=corral ;;
  *) echo "mode must be stock or corral" >&2; exit 2 ;;
esac
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export IPP_CONTROLLER_IP=127.0.0.1 PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)
timeout --kill-after=30 "${SUITE_TIMEOUT:-1800}" "$py" -m pytest -c "$here/suite.ini" \
  --rootdir "$work" -p corral_ipp_plugin --timeout=60 \
  "${files[@]/#/$suite/}" > "$out" 2>&1
rc=$?
echo "mode=$mode engines=${IPP_SUITE_ENGINES:-stock} client=${IPP_SUITE_CLIENT:-stock} exit=$rc wall=$(( $(date +%s) - start ))s" >> "$out"
tail -n 2 "$out"
