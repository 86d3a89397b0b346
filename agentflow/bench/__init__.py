"""Benchmarks and load tests: `agentflow benchmark`, `agentflow loadtest`, the submitter script.

:func:`agentflow.bench.run.run` drives one run; :mod:`~agentflow.bench.driver` holds the
closed-loop load driver, :mod:`~agentflow.bench.workloads` the standard workloads W0–W2,
:mod:`~agentflow.bench.stages` load shapes, :mod:`~agentflow.bench.stats` the report.
"""

from agentflow.bench.stats import BenchReport, percentile
from agentflow.bench.workloads import WORKLOADS, Workload

__all__ = ["WORKLOADS", "BenchReport", "Workload", "percentile"]
