"""Names of AgentFlow's own Redis keys, all under `[broker] key_prefix`, in one place."""

from __future__ import annotations


class Keys:
    """The keys of one AgentFlow deployment (one key prefix)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.inflight = f"{prefix}:inflight"
        """Sorted set of events emitted and not yet finished (the producer's bound)."""
        self.agents = f"{prefix}:agents"
        """Hash: agent name → when a live worker last announced it (epoch seconds)."""
        self.epoch = f"{prefix}:epoch"
        """This Redis's identity: changes when it comes back empty."""
        self.workers_ready = f"{prefix}:workers:ready"
        """Set of main-process pids of workers that are ready (local tooling waits on it)."""
        self.scheduled = f"{prefix}:scheduled"
        """Sorted set of scheduled entries (delayed events, wait timeouts): member → due time."""
        self.scheduled_items = f"{prefix}:scheduled:items"
        """Hash: scheduled member → its entry (queue and fully built queue item, as JSON)."""
        self.clock_offset = f"{prefix}:test:clock_offset"
        """Test-only clock hook: seconds the scheduler adds to its clock (read only by workers
        started with ``AGENTFLOW_TEST_CLOCK=1``)."""
        self.backlog_turn = f"{prefix}:backlog:turn"
        """Which worker counts the queues' backlog this heartbeat interval (a lock)."""

    def done(self, dedup_key: str) -> str:
        """An event's stored result (first finish wins)."""
        return f"{self.prefix}:done:{dedup_key}"

    def claim(self, dedup_key: str) -> str:
        """The lease of the run that holds an event."""
        return f"{self.prefix}:claim:{dedup_key}"

    def deliveries(self, task_id: str, step: int) -> str:
        """How many runs of one step of a task id have started (poison-message cap)."""
        return f"{self.prefix}:deliv:{task_id}:{step}"

    def gateway_event(self, event_id: str) -> str:
        """What the gateway recorded of an event it emitted (agent, dedup key), for scoping."""
        return f"{self.prefix}:gw:event:{event_id}"

    def cancel(self, event_id: str) -> str:
        """Set when an event is cancelled: no run starts or finishes after it."""
        return f"{self.prefix}:cancel:{event_id}"

    def retry_reason(self, task_id: str) -> str:
        """Why a task last retried (quoted by a later dead letter)."""
        return f"{self.prefix}:retryreason:{task_id}"

    def tool_result(self, task_id: str) -> str:
        """A tool call's first result (a redelivered call reuses it)."""
        return f"{self.prefix}:toolres:{task_id}"

    def wait(self, event_id: str) -> str:
        """A suspended event's record (``WaitFor``): what it waits for and what resumes it."""
        return f"{self.prefix}:wait:{event_id}"

    def survivors(self, epoch: str) -> str:
        """Events workers still held when Redis came back empty as `epoch`."""
        return f"{self.prefix}:survivors:{epoch}"

    def tenant_slots(self, tenant: str) -> str:
        """Sorted set of a tenant's events in flight (id → lease expiry), when capped."""
        return f"{self.prefix}:tenant:{tenant}:slots"

    def tenant_parked(self, tenant: str) -> str:
        """A tenant's events held back by its cap, oldest first (id, queue, message)."""
        return f"{self.prefix}:tenant:{tenant}:parked"

    def agent_rate(self, agent: str) -> str:
        """An agent's rate limit state (the theoretical arrival time of its next event)."""
        return f"{self.prefix}:agentrate:{agent}"

    def agent_slots(self, agent: str) -> str:
        """Sorted set of an agent's events in flight (id → lease expiry), when capped."""
        return f"{self.prefix}:agent:{agent}:slots"
