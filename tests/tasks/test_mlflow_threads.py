"""MLflow from several threads: the evaluation set-up cannot take the import-hook lock and then
import, and one thread's stdout redirect cannot outlive another's."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from tasks.tracking.mlflow_threads import quiet_stdout
from tests.conftest import own_cache_env

# In a fresh interpreter: import what every ragcycle process imports, optionally settle, then
# record which hooks the GenAI evaluation set-up registers for modules already imported (a hook
# for an imported module fires at once, inside MLflow's import-hook lock).
_PROBE = """
import json, sys
import sentence_transformers, torch, mlflow
import mlflow.utils.import_hooks as hooks
from tasks.tracking.mlflow_threads import settle_autologging
settled = settle_autologging() if sys.argv[1] == "settle" else []
fired = []
register = hooks.register_generic_import_hook
def spy(hook, name, hook_dict, overwrite=True):
    if name in sys.modules:
        fired.append(name)
    return register(hook, name, hook_dict, overwrite)
hooks.register_generic_import_hook = spy
from mlflow.models.evaluation.utils.trace import configure_autologging_for_evaluation
with configure_autologging_for_evaluation(enable_tracing=True):
    pass
print(json.dumps({"settled": settled, "fired": fired}))
"""


def _probe(mode: str) -> dict[str, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_evaluation_setup_fires_no_hook_under_the_lock_once_settled() -> None:
    """Regression: parallel reindex contenders deadlocked (0% CPU, SIGTERM ignored) when
    mlflow.genai.evaluate fired torch's and transformers' autolog hooks inside MLflow's
    import-hook lock while another contender thread was importing a module."""
    unsettled = _probe("plain")
    assert {"torch", "transformers"} <= set(unsettled["fired"])  # the hazard is real here
    settled = _probe("settle")
    assert {"pytorch", "transformers"} <= set(settled["settled"])
    assert settled["fired"] == []


def test_settling_twice_disables_nothing_new() -> None:
    from tasks.tracking.mlflow_threads import settle_autologging

    settle_autologging()
    assert settle_autologging() == []


def test_stdout_redirects_from_many_threads_restore_the_real_stdout() -> None:
    """Regression: `reindex --json` printed no JSON when two contender threads redirected
    stdout at once and restored each other's capture buffer."""
    original = sys.stdout
    errors: list[BaseException] = []

    def noisy() -> None:
        try:
            for _ in range(200):
                with quiet_stdout(io.StringIO()):
                    print("banner")
                    time.sleep(0)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=noisy) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert sys.stdout is original


def test_a_json_command_keeps_library_prints_off_stdout() -> None:
    """What a library prints (from Python, to file descriptor 1) while a --json command runs
    goes to stderr; stdout holds only the JSON object."""
    script = (
        "import os, sys\n"
        "from ragcycle.jsonout import StdoutGuard\n"
        "with StdoutGuard() as guard:\n"
        "    print('library banner')\n"
        "    os.write(1, b'C-level banner\\n')\n"
        "    guard.write('{\"ok\": true}')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"ok": True}
    assert "library banner" in done.stderr
    assert "C-level banner" in done.stderr


_TRACES_WHILE_EVALUATING = """
import json, sys, threading
import mlflow, pandas as pd
from mlflow.genai.scorers import scorer
from tasks.tracking.mlflow_threads import genai_evaluate_lock
from tasks.tracking.traces import QueryTrace

mlflow.set_tracking_uri("sqlite:///" + sys.argv[1])
experiment = mlflow.set_experiment("threads").experiment_id

def answer(count, ids):
    for i in range(count):
        trace = QueryTrace(experiment, f"question {i}", {})
        with trace.step("retrieve", "RETRIEVER", {"question": i}) as stage:
            stage.set_outputs({"chunks": 1})
        trace.close({"answer": "a"}, {})()
        ids.append(trace.trace_id)

seed = []
answer(4, seed)
client = mlflow.MlflowClient()

@scorer(name="score", aggregations=[])
def score(outputs):
    return 1.0

ids = []
writer = threading.Thread(target=answer, args=(150, ids))
writer.start()
for _ in range(4):
    frame = pd.DataFrame([{"trace": client.get_trace(i)} for i in seed])
    with genai_evaluate_lock(), mlflow.start_run():
        mlflow.genai.evaluate(data=frame, scorers=[score])
writer.join()
missing = 0
for trace_id in ids:
    try:
        client.get_trace(trace_id)
    except Exception:
        missing += 1
print(json.dumps({"written": len(ids), "missing": missing}))
"""


def test_traces_written_while_another_thread_evaluates_are_all_stored(tmp_path: Path) -> None:
    """Regression: a reindex failed with "Trace ... not found" after its log-evaluation retries:
    traces written by one contender while another ran mlflow.genai.evaluate were now and then
    never stored (12-15 of 200 without the trace gate, measured)."""
    done = subprocess.run(
        [sys.executable, "-c", _TRACES_WHILE_EVALUATING, str(tmp_path / "mlflow.db")],
        capture_output=True,
        text=True,
        timeout=300,
        env=own_cache_env(MLFLOW_ENABLE_ASYNC_TRACE_LOGGING="false"),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"written": 150, "missing": 0}
