"""The Ray backend on a real two-node Ray cluster, on this machine only.

A head and a second node are started as separate ``ray start --block`` processes, each
with one CPU, its own temp dir and a custom resource naming it (``head_node``,
``second_node``). One study, ``archspace search --backend ray --address 127.0.0.1:PORT`` in a
subprocess, runs on them; once the second node has finished a trial and is training another,
the second node is killed. The tests check that trials ran on both nodes (the ``node``
attribute of each trial), and that the trial the second node lost was retried by Ray Tune on
the head, from its checkpoint, and that the study still ended with exactly its budget of
trained trials, each point once.

Nothing leaves this machine: Ray advertises the machine's own address for a loopback one
(``ray start`` rewrites 127.0.0.1), which the tests check is an address of this machine. The
cluster uses a random auth token, explicit free ports and its own temp dir, so it does not
meet another Ray session running here (``tests/test_search_ray.py`` under pytest-xdist);
teardown kills exactly the process trees it started (``ray stop`` would stop every Ray
process of the machine).

Run with ``-s`` to see the figures (trials per node, retries, budget).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
optuna = pytest.importorskip("optuna")

ROOT = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")
STARTUP_S = 120  # a node to join the cluster (Ray starts slowly on 2 busy cores)
STUDY_S = 360    # one study on the cluster
EPOCHS = 12      # about 1 s an epoch: a trial lasts about twice as long as a Ray worker takes to start
BUDGET = 5

# the tiny study of test_search_ray.py, with more epochs (long enough trials to be caught mid-run)
STUDY = {
    "name": "tiny-cluster",
    "space": {
        "base": "coatnet-0",
        "set": {"input.size": 32, "stages[*].depth": 1, "stem.channels": [16, 16]},
        "choices": {"layout": ["C-C-C-C", "C-C-T-T"], "train.lr": {"loguniform": [1e-3, 1e-2]}},
        "match": {"params": 3.0e5, "tolerance": 0.1},
    },
    "train": {"data": "synthetic", "epochs": EPOCHS, "batch_size": 64},
    "sampler": {"kind": "random", "seed": 0},
    "trials": BUDGET,
    "resources": {"cpu": 1},
}

pytestmark = [pytest.mark.skipif(not RAY.is_file(), reason="the ray CLI is not installed next to this Python"),
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process trees are read from /proc")]


# -- processes ---------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _parents() -> dict[int, int]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            out[int(name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def process_tree(root: int) -> set[int]:
    """``root`` and its descendants (Ray's workers run in process groups of their own, so a
    process group is not enough)."""
    parents = _parents()
    tree, grew = {root}, True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return tree


def kill_tree(root: int, sig: int) -> set[int]:
    pids = process_tree(root)
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    return pids


class Node:
    """One ``ray start --block`` process (the node's processes are its descendants)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], temp_dir: Path):
        self.name = name
        self.temp_dir = temp_dir
        self.log = temp_dir.parent / f"{name}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([str(RAY), "start", "--block", *args, f"--temp-dir={temp_dir}"], env=env,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.id: str | None = None

    def kill(self) -> set[int]:
        """SIGKILL the node's whole process tree (a lost machine): no clean goodbye to the cluster."""
        pids = kill_tree(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        return pids

    def stop(self) -> None:
        if self.proc.poll() is None:
            pids = kill_tree(self.proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + 3  # a throwaway cluster: little grace
            while time.monotonic() < deadline and any(_alive(p) for p in pids):
                time.sleep(0.2)
            for pid in pids | process_tree(self.proc.pid):
                if _alive(pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


NODES_SCRIPT = """
import json, sys, time, ray
deadline = time.monotonic() + float(sys.argv[2])
while True:  # the head may still be starting
    try:
        ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
        break
    except Exception:
        if time.monotonic() > deadline:
            raise
        time.sleep(1)
while True:
    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) >= int(sys.argv[3]) or time.monotonic() > deadline:
        break
    time.sleep(0.5)
print(json.dumps([{"id": n["NodeID"], "ip": n["NodeManagerAddress"], "resources": n["Resources"]} for n in nodes]))
"""


class Cluster:
    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env.update({
            "RAY_TMPDIR": str(root), "RAY_USAGE_STATS_ENABLED": "0",
            # a token of this cluster's own: no other Ray session on the machine can join or be joined
            "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
            # the head notices a lost node within seconds (defaults: about 30 s)
            "RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "1000",
            "RAY_health_check_failure_threshold": "4",
            "OMP_NUM_THREADS": "1",
        })
        self.nodes: dict[str, Node] = {}
        self.ip: str | None = None  # the address Ray gives the nodes

    def _ports(self) -> list[str]:
        # explicit free ports: the defaults (dashboard agent 52365, ...) clash with another session here
        return [f"--{opt}={free_port()}" for opt in (
            "node-manager-port", "object-manager-port", "metrics-export-port", "runtime-env-agent-port",
            "dashboard-agent-listen-port", "dashboard-agent-grpc-port")] + [
            "--min-worker-port=0", "--max-worker-port=0", "--num-cpus=1", "--num-gpus=0",
            "--object-store-memory=100000000", "--disable-usage-stats", "--node-ip-address=127.0.0.1"]

    def start(self) -> None:
        self.nodes["head"] = Node("head", [
            "--head", f"--port={self.port}", "--include-dashboard=false", f"--dashboard-port={free_port()}",
            '--resources={"head_node": 1}', *self._ports()], self.env, self.root / "head")
        self.wait_for(1)
        self.nodes["second"] = Node("second", [
            f"--address={self.address}", '--resources={"second_node": 1}', *self._ports()],
            self.env, self.root / "second")
        for n in self.wait_for(2):
            name = "head" if "head_node" in n["resources"] else "second"
            self.nodes[name].id = n["id"]
            self.ip = n["ip"]

    def wait_for(self, count: int) -> list[dict]:
        try:
            out = subprocess.run([sys.executable, "-c", NODES_SCRIPT, self.address, str(STARTUP_S), str(count)],
                                 env=self.env, cwd=self.root, capture_output=True, text=True,
                                 timeout=STARTUP_S + 60)
        except subprocess.TimeoutExpired:
            out = None
        ok = out is not None and out.returncode == 0 and out.stdout.strip()
        nodes = json.loads(out.stdout.strip().splitlines()[-1]) if ok else []
        if len(nodes) < count:
            logs = "\n".join(f"--- {n.name}\n{n.log_tail()}" for n in self.nodes.values())
            pytest.fail(f"the Ray cluster did not reach {count} nodes: "
                        f"{(out.stderr[-2000:] if out else 'timed out')}\n{logs}")
        return nodes

    def stop(self) -> None:
        for node in reversed(list(self.nodes.values())):
            node.stop()


@pytest.fixture(scope="module")
def cluster():
    # short: Ray's unix sockets live under it (at most 107 characters)
    root = Path(tempfile.mkdtemp(prefix="asrc-", dir="/tmp"))
    c = Cluster(root)
    try:
        c.start()
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


# -- the study ---------------------------------------------------------------------------------------

def start_search(cluster: Cluster, run_dir: Path, trials: int) -> subprocess.Popen:
    study = run_dir.parent / "study.yaml"
    study.write_text(json.dumps(STUDY))  # JSON is YAML
    return subprocess.Popen(
        [sys.executable, "-m", "archspace.cli.app", "search", str(study), "--backend", "ray",
         "--address", cluster.address, "--trials", str(trials), "--out", str(run_dir), "--format", "json"],
        env=cluster.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float) -> dict:
    try:
        stdout, stderr = proc.communicate(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"the study did not end in time:\n{stderr[-3000:]}")
    assert proc.returncode == 0, stderr[-3000:]
    return json.loads(stdout)  # stdout is the summary alone: Ray's own messages go to stderr


def result_rows(cluster: Cluster, run_dir: Path) -> dict[str, list[dict]]:
    """What Ray Tune has logged so far per trial: each trial's ``result.json``, written as results
    come in to the driver's staging folder in the Ray session (the head's temp dir here) and
    copied to ``RUN_DIR/ray`` from time to time."""
    rows: dict[str, list[dict]] = {}
    staged = cluster.root.glob("head/session_2*/artifacts/*/*/driver_artifacts/trial-*/result.json")
    for f in [*(run_dir / "ray").glob("*/trial-*/result.json"), *staged]:
        try:
            lines = f.read_text().splitlines()
        except OSError:
            continue
        rows[f.parent.name.removeprefix("trial-")] = [row for row in map(_json_or_none, lines) if row]
    return rows


def _json_or_none(line: str) -> dict | None:
    try:
        return json.loads(line)
    except ValueError:  # a line being written
        return None


@dataclass
class Run:
    summary: dict
    trials: list
    victim: str            # the Ray trial the second node was running when it was killed
    victim_epoch: int      # its last epoch reported from the second node
    killed_at: float       # seconds after the search started
    killed: int            # processes of the second node killed
    seconds: float


@pytest.fixture(scope="module")
def run(cluster, tmp_path_factory) -> Run:
    """One study of BUDGET trials on the two nodes. Once the second node has finished a trial
    and reported an epoch of another, the second node is killed (SIGKILL, its whole process
    tree: a lost machine); the search goes on to the end on the head."""
    run_dir = tmp_path_factory.mktemp("cluster") / "run"
    second = cluster.nodes["second"]
    t0 = time.monotonic()
    proc = start_search(cluster, run_dir, BUDGET)
    victim = None
    try:
        finished_there: set[str] = set()
        while victim is None and proc.poll() is None and time.monotonic() - t0 < STUDY_S:
            rows = {k: r for k, r in result_rows(cluster, run_dir).items() if r and r[-1].get("node_id") == second.id}
            finished_there |= {k for k, r in rows.items() if "final_status" in r[-1]}
            running = [(k, r[-1]["epoch"]) for k, r in rows.items() if k not in finished_there]
            if finished_there and running:
                victim = running[0]
            else:
                time.sleep(0.2)
        if victim is None:
            kill_tree(proc.pid, signal.SIGKILL)
            _, stderr = proc.communicate()
            pytest.fail(f"the second node did not finish a trial and start another before the study ended "
                        f"(it finished {len(finished_there)}); the trials were too short for its worker to start?"
                        f"\n{stderr[-2000:]}")
        killed = second.kill()
        killed_at = time.monotonic() - t0
    except BaseException:
        if proc.poll() is None:
            kill_tree(proc.pid, signal.SIGKILL)
            proc.communicate()
        raise
    summary = finish(proc, STUDY_S - (time.monotonic() - t0))
    study = optuna.load_study(study_name=STUDY["name"], storage=f"sqlite:///{run_dir / 'study.db'}")
    return Run(summary, study.get_trials(deepcopy=False), victim[0], victim[1], killed_at, len(killed),
               time.monotonic() - t0)


def trained(run: Run) -> list:
    return [t for t in run.trials if t.user_attrs.get("status") in ("complete", "diverged", "pruned")]


def test_trials_run_on_both_nodes(cluster, run):
    names = {n.id: name for name, n in cluster.nodes.items()}
    per_node = {name: 0 for name in cluster.nodes}
    for t in trained(run):
        node = t.user_attrs["node"]
        assert node["id"] in names, node
        assert node["ip"] == cluster.ip and node["host"] == socket.gethostname()
        assert t.user_attrs["owner"]["host"] == node["host"]  # the worker process, on that node
        per_node[names[node["id"]]] += 1
    # the cluster's address is one of this machine's (binding to it fails for any other host's)
    with socket.socket() as s:
        s.bind((cluster.ip, 0))
    print(f"\n[ray cluster] trained trials per node {per_node} (the node each finished on), budget {BUDGET}; "
          f"node address {cluster.ip} (this machine); study {run.seconds:.0f} s")
    assert per_node["head"] >= 1 and per_node["second"] >= 1, per_node


def test_a_lost_node_s_trial_is_retried_and_the_budget_kept(cluster, run):
    # exactly the budget: each point trained once, each Ray trial written once, nothing failed or added
    done = trained(run)
    assert len(done) == BUDGET and len(run.trials) == BUDGET, [t.user_attrs.get("status") for t in run.trials]
    assert len({t.user_attrs["key"] for t in done}) == BUDGET, "a point was trained twice"
    assert len({t.user_attrs["ray_trial_id"] for t in run.trials}) == BUDGET, "a Ray trial was written twice"
    assert run.summary["counts"].get("complete", 0) + run.summary["counts"].get("diverged", 0) == BUDGET
    for t in done:
        assert [h["epoch"] for h in t.user_attrs["history"]] == list(range(1, EPOCHS + 1))
        assert sorted(t.intermediate_values) == list(range(1, EPOCHS + 1))

    # the trial the second node was running: retried once, on the head, from its checkpoint
    head, second = cluster.nodes["head"], cluster.nodes["second"]
    retried = [t for t in done if t.user_attrs.get("ray_retries")]
    assert [t.user_attrs["ray_trial_id"] for t in retried] == [run.victim]
    (lost,) = retried
    attrs = lost.user_attrs
    assert attrs["status"] == "complete" and attrs["ray_retries"] == 1
    (failure,) = attrs["ray_failures"]
    assert failure["node"]["id"] == second.id and failure["error"]  # "The actor died ...", or "... unavailable"
    assert attrs["node"]["id"] == head.id
    # checkpoints are written before each epoch is reported: at least the epochs seen on the second node
    assert attrs["resumed_after_epoch"] >= run.victim_epoch
    assert run.summary["trials"][lost.number]["resumed_after_epoch"] == attrs["resumed_after_epoch"]
    later = [t for t in done if t.datetime_complete.timestamp() > lost.datetime_complete.timestamp()]
    assert all(t.user_attrs["node"]["id"] == head.id for t in later)

    print(f"\n[ray cluster] budget {BUDGET}: {len(done)} trained, {len(run.trials)} trials recorded, "
          f"{len({t.user_attrs['key'] for t in done})} distinct points; second node killed "
          f"{run.killed_at:.0f} s into the study ({run.killed} processes) while Ray trial {run.victim} was at "
          f"epoch {run.victim_epoch}/{EPOCHS} there; retried trials: {len(retried)} (on the head, resumed after "
          f"epoch {attrs['resumed_after_epoch']}); error noted: {failure['error'][:80]!r}")
