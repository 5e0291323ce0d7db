"""The CPU bench's worker processes, one per library: convmm's (which never imports
torch), PyTorch's and SciPy's, each started as ``python -m convmm._bench.workers --worker
LIBRARY --worker-config JSON`` and asked one thing a line: a JSON request on its standard
input (``info``, ``warm``, ``time``, ``memory``, ``small``, ``large``, ``gemm`` or
``quit``), a JSON reply on its standard output."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from .cases import Layer, convmm_call, large_call, small_call, torch_call
from .measure import Host, _wall_seconds, extra_memory, gemm_share, median_call_seconds

LIBRARIES = ("convmm", "torch", "scipy")
"""The libraries a worker process runs."""


class _Worker:
    """A ``python -m convmm._bench.workers --worker LIBRARY`` process, asked one thing a line."""

    def __init__(self, library, config):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "convmm._bench.workers", "--worker", library,
             "--worker-config", json.dumps(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, **request):
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"a bench worker stopped (exit {self.process.wait()})")
        return json.loads(line)

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.write(json.dumps(dict(op="quit")) + "\n")
        self.process.stdin.close()
        self.process.wait()
        self.process.stdout.close()


def _worker(library, config):
    """The loop of one bench process: convmm's (which never imports torch) or PyTorch's."""
    layers = [Layer(spec, config["batch"]) for spec in config["layers"]]
    jobs = [(layer, which) for layer in layers for which in config["passes"]]
    threads = config["threads"]
    if library == "torch":
        import torch

        if threads:
            torch.set_num_threads(threads)
    elif library == "scipy":
        pass                                # scipy.signal, imported by the first call
    else:
        import convmm

        if threads:
            convmm.set_num_threads(threads)
    built, small_built, large_built = {}, {}, {}

    def calls(job):
        if job not in built:
            layer, which = jobs[job]
            # The same data in both processes: one seed per job.
            random = Host.random(config["dtype"], seed=job)
            ours, memory_calls, arrays = convmm_call(layer, which, config["method"], random)
            built.clear()       # one job's arrays at a time
            built[job] = (torch_call(layer, which, arrays) if library == "torch" else ours,
                          memory_calls)
        return built[job]

    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        if op == "quit":
            break
        if op == "info":
            if library == "torch":
                reply = dict(threads=torch.get_num_threads(), version=torch.__version__)
            else:
                from threadpoolctl import threadpool_info

                blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
                reply = dict(threads=convmm.get_num_threads(), blas_threads=blas,
                             imported_torch="torch" in sys.modules)
        elif op == "warm":
            try:
                calls(request["job"])[0]()
                reply = {}
            except ValueError as error:     # e.g. method="winograd" on a strided layer
                if library == "torch":
                    raise
                reply = dict(refused=str(error))
        elif op == "time":
            reply = dict(seconds=_wall_seconds(calls(request["job"])[0]))
        elif op == "memory":
            reply = dict(bytes=max(extra_memory(call, out) for call, out in
                                   calls(request["job"])[1]))
        elif op == "small":
            name = request["name"]
            if name not in small_built:
                small_built[name] = small_call(library, name, Host.random(config["dtype"], seed=0))
            reply = dict(seconds=median_call_seconds(small_built[name]))
        elif op == "large":
            key = (request["name"], request.get("method", "auto"))
            try:
                if key not in large_built:
                    large_built.clear()     # one case's arrays at a time
                    large_built[key] = large_call(library, *key)
                    large_built[key]()      # warm: plans, caches, first-call costs
                reply = dict(seconds=_wall_seconds(large_built[key]))
            except ValueError as error:     # a GEMM method refusing a kernel this large
                if library != "convmm":
                    raise
                reply = dict(refused=str(error))
        elif op == "gemm":
            reply = dict(rows=gemm_share(repeats=request["repeats"], threads=threads))
        else:
            raise ValueError(f"unknown bench request {op!r}")
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    return 0


def main(argv=None):
    """A worker's command line (the parent starts it; not for users)."""
    parser = argparse.ArgumentParser(prog="python -m convmm._bench.workers")
    parser.add_argument("--worker", required=True, choices=LIBRARIES,
                        help="the library this process times")
    parser.add_argument("--worker-config", required=True,
                        help="the layers, passes, batch, dtype, method and threads, as JSON")
    args = parser.parse_args(argv)
    return _worker(args.worker, json.loads(args.worker_config))


if __name__ == "__main__":     # a bench worker: python -m convmm._bench.workers --worker LIBRARY
    sys.exit(main())
