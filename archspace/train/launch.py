"""One trial over several processes, started from a running process (a study's worker).

:func:`train_ranks` trains a spec as ``nproc`` data-parallel ranks under ``torchrun``
(``python -m torch.distributed.run --standalone``) and returns its :class:`TrainResult`, as
:func:`archspace.train.train` does in-process. Rank 0 talks to the caller over a local
connection (``multiprocessing.connection``, authenticated, JSON messages only): it sends
each epoch's metrics and waits for the caller's callback to say whether to stop (a pruner),
so a pruned trial stops after the epoch the pruner saw, on every rank; then it sends the
result. Any rank sends the error that ends the run (the first one to fail may outlive the
others' messages: torchrun stops the rest).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
from dataclasses import fields
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any, Callable

from .._cpus import share
from ..errors import Problem, SpecError
from ..spec import NetworkSpec
from .config import TrainConfig
from .loop import TrainResult

LINK_ENV = "ARCHSPACE_TRIAL_LINK"  # host:port:key of the caller's listener, set for the ranks


class RanksFailed(RuntimeError):
    """The ranks ended without a result (a crash, a kill): the first line of what they said."""


def train_ranks(spec: NetworkSpec, config: TrainConfig, out_dir: str | Path, *, nproc: int, resume: bool = False,
                callback: Callable[[dict], bool | None] | None = None, visible_devices: str | None = None,
                threads: int | None = None) -> TrainResult:
    """Train ``spec`` with ``config`` into ``out_dir`` as ``nproc`` ranks (gloo on the CPU,
    nccl on CUDA); the global batch is ``config.batch_size``, split across the ranks.

    Args:
        callback: called here with each epoch's metrics; ``True`` stops the run (``pruned``).
        visible_devices: ``CUDA_VISIBLE_DEVICES`` of the ranks (rank ``i`` takes the ``i``-th).
        threads: CPU threads per rank (default: this machine's CPUs shared among the ranks).

    Raises:
        SpecError: the ranks refused the spec, recipe, data or run directory (as ``train``).
        RanksFailed: the ranks died without saying why (their last stderr line).
    """
    key = secrets.token_bytes(32)
    with tempfile.TemporaryDirectory(prefix="archspace-ranks-") as tmp, \
            Listener(("127.0.0.1", 0), authkey=key) as listener:
        job = Path(tmp) / "job.json"
        job.write_text(json.dumps({"spec": spec.model_dump(mode="json", exclude_none=True),
                                   "train": config.model_dump(mode="json"), "out": str(out_dir), "resume": resume}))
        host, port = listener.address
        env = dict(os.environ, **{LINK_ENV: f"{host}:{port}:{key.hex()}"},
                   OMP_NUM_THREADS=str(threads or share(nproc)))
        if visible_devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = visible_devices
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "archspace.train.launch", str(job)]
        err = Path(tmp) / "stderr"
        with open(err, "wb") as stderr:
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
            answer: dict[str, Any] = {}
            talk = threading.Thread(target=_serve, args=(listener, callback, answer), daemon=True)
            talk.start()
            try:
                code = proc.wait()
            except BaseException:  # interrupted: the ranks stop too (torchrun passes the signal on)
                proc.terminate()
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                raise
            _settle(answer)  # messages already sent are read by the connections' threads
        if "result" in answer:
            names = {f.name for f in fields(TrainResult)}
            return TrainResult(**{k: v for k, v in answer["result"].items() if k in names})
        if "problems" in answer:
            raise SpecError([Problem(p["path"], p["message"]) for p in answer["problems"]])
        if "error" in answer:
            raise RanksFailed(answer["error"])
        lines = [line for line in err.read_text(errors="replace").splitlines() if line.strip()]
        raise RanksFailed(f"{nproc} ranks ended with exit status {code} and no result"
                          + (f": {lines[-1].strip()[:300]}" if lines else ""))


def _serve(listener: Listener, callback, answer: dict) -> None:
    """Accept every rank's connection until the listener is closed: rank 0 sends its epochs
    (and is told whether to stop) and the result; any rank may send the error that ended it
    (the first one is kept: the rank that failed first may outlive the others' messages)."""
    while True:
        try:
            conn = listener.accept()
        except (OSError, EOFError):  # closed, or a connection that failed to authenticate
            return
        answer["connected"] = True
        threading.Thread(target=_talk, args=(conn, callback, answer), daemon=True).start()


def _talk(conn: Connection, callback, answer: dict) -> None:
    with conn:
        while True:
            try:
                message = json.loads(conn.recv_bytes(1 << 26))
            except (EOFError, OSError, ValueError):
                return
            kind = message.get("kind")
            if kind == "epoch":
                stop = bool(callback(message["row"])) if callback is not None else False
                conn.send_bytes(json.dumps(stop).encode())
            elif kind in ("result", "problems", "error"):
                answer.setdefault(kind, message[kind])


def _settle(answer: dict, wait_s: float = 30.0) -> None:
    """Wait (a little) until a connected rank's last message is in: the result or an error."""
    import time

    deadline = time.monotonic() + (wait_s if answer.get("connected") else 0.0)
    while not {"result", "problems", "error"} & set(answer) and time.monotonic() < deadline:
        time.sleep(0.05)


# -- the ranks' side ----------------------------------------------------------------------------------

def _link() -> Connection | None:
    value = os.environ.get(LINK_ENV)
    if not value:
        return None
    host, port, key = value.rsplit(":", 2)
    return Client((host, int(port)), authkey=bytes.fromhex(key))


def _send(conn: Connection | None, message: dict) -> None:
    if conn is not None:
        conn.send_bytes(json.dumps(message).encode())


def main(argv: list[str]) -> int:
    """A rank: run the job file's training; rank 0 reports to the caller."""
    from .distributed import ranks_from_env
    from .loop import train

    job = json.loads(Path(argv[0]).read_text())
    main_rank = ranks_from_env().main
    conn = _link()  # every rank may have to say why the run ended

    def callback(row: dict) -> bool:
        if conn is None or not main_rank:
            return False  # rank 0 decides for every rank
        _send(conn, {"kind": "epoch", "row": row})
        return bool(json.loads(conn.recv_bytes()))

    try:
        spec = NetworkSpec.model_validate(job["spec"])
        config = TrainConfig.model_validate(job["train"])
        result = train(spec, config, job["out"], resume=job["resume"], callback=callback)
    except SpecError as exc:
        _send(conn, {"kind": "problems", "problems": [{"path": p.path, "message": p.message} for p in exc.problems]})
        return 2
    except Exception as exc:  # noqa: BLE001 - said to the caller, which records the trial as failed
        text = str(exc).strip()
        _send(conn, {"kind": "error", "error": f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"})
        return 1
    if main_rank:
        _send(conn, {"kind": "result", "result": result.as_dict()})
    if conn is not None:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
