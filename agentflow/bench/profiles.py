"""CPU profiles of the workers during a benchmark, taken with py-spy.

py-spy samples a running interpreter from outside (no code in the worker, no sampler thread
competing for the GIL) and writes collapsed stacks, which speedscope, flamegraph.pl and
inferno open. It reads the worker's memory, so it needs the same user as the worker (root,
or ``CAP_SYS_PTRACE`` in a container) and runs on the worker's host: the benchmark profiles
the workers of its own ``--local`` cluster. Elsewhere run ``py-spy record --pid <worker pid>
--subprocesses --format raw`` on the worker's host (docs/performance.md).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from agentflow.errors import AgentFlowError


def py_spy() -> str:
    """The py-spy executable (beside this Python's, else on PATH), or an error that says how
    to install it."""
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise AgentFlowError("--profile cpu needs py-spy: pip install 'agentflow[bench]'")
    return found


class CpuProfileCollector:
    """One ``py-spy record`` per worker for `seconds`; the results merged into one file."""

    def __init__(self, pids: list[int], seconds: float, rate: int = 100) -> None:
        self.pids = pids
        self.seconds = seconds
        self.rate = rate
        self._dir = Path(tempfile.mkdtemp(prefix="agentflow-profile-"))
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        """Start sampling every worker (and its pool processes) in the background."""
        exe = py_spy()
        for pid in self.pids:
            self._procs[pid] = subprocess.Popen(
                [exe, "record", "--pid", str(pid), "--subprocesses", "--nonblocking",
                 "--rate", str(self.rate), "--duration", str(max(1, round(self.seconds))),
                 "--format", "raw", "--output", str(self._dir / f"{pid}.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip

    def close(self) -> None:
        """Stop any py-spy still running and remove its files (after :meth:`finish`, a no-op)."""
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(self._dir, ignore_errors=True)

    def finish(self, output: Path) -> dict[str, Any]:
        """Wait for py-spy and write one collapsed-stack file (``worker-<pid>`` as root)."""
        errors: dict[str, str] = {}
        lines: list[str] = []
        for pid, proc in self._procs.items():
            try:
                _, err = proc.communicate(timeout=self.seconds + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            path = self._dir / f"{pid}.txt"
            if not path.exists():
                errors[str(pid)] = err.decode(errors="replace").strip()[-500:] or "no profile"
                continue
            text = path.read_text()
            lines += [f"worker-{pid};{line}" for line in text.splitlines() if line.strip()]
        shutil.rmtree(self._dir, ignore_errors=True)
        output.write_text("\n".join(lines) + ("\n" if lines else ""))
        return {"workers": sorted(self._procs), "errors": errors, "stacks": len(lines)}
