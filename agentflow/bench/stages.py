"""Load shapes: how many virtual users are active at each moment of a run.

A stage is ``DURATION:USERS`` — over DURATION the user count ramps linearly from the previous
stage's target to USERS (the first stage ramps from 0), as in k6. ``"30s:10,1m:100,30s:10"``
ramps to 10 users, then to 100 over a minute, then back down to 10.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentflow.durations import parse_duration

PRESETS: dict[str, str] = {
    # Ramp up, hold well above the nominal load, ramp down.
    "stress": "10s:50,20s:200,20s:200,10s:0",
    # Idle-ish, then a sudden burst, then back.
    "spike": "10s:10,2s:400,10s:400,2s:10,10s:10",
    # Constant nominal load.
    "soak": "5s:50,60s:50",
}


@dataclass(frozen=True)
class Stage:
    """Ramp to `users` over `seconds`."""

    seconds: float
    users: int


def parse_stages(text: str) -> list[Stage]:
    """Parse ``"30s:10,1m:100"`` or a preset name; raises ValueError naming the bad part."""
    text = PRESETS.get(text.strip(), text)
    stages: list[Stage] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if ":" not in part:
            raise ValueError(f"stage {part!r}: expected DURATION:USERS, e.g. 30s:10")
        dur, users = part.rsplit(":", 1)
        try:
            seconds = parse_duration(dur)
            count = int(users)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"stage {part!r}: {exc}") from None
        if seconds <= 0 or count < 0:
            raise ValueError(f"stage {part!r}: duration must be > 0 and users >= 0")
        stages.append(Stage(seconds, count))
    if not stages:
        raise ValueError("no stages given")
    return stages


def total_seconds(stages: list[Stage]) -> float:
    """How long the whole shape lasts."""
    return sum(s.seconds for s in stages)


def users_at(stages: list[Stage], t: float) -> int:
    """Active users at `t` seconds into the run (linear ramp within a stage)."""
    start, previous = 0.0, 0
    for stage in stages:
        if t < start + stage.seconds:
            frac = (t - start) / stage.seconds
            return max(0, round(previous + (stage.users - previous) * frac))
        start, previous = start + stage.seconds, stage.users
    return stages[-1].users


def constant(users: int, seconds: float) -> list[Stage]:
    """A flat load: `users` from the first moment for `seconds` (a 1 ms ramp)."""
    return [Stage(0.001, users), Stage(max(seconds - 0.001, 0.001), users)]
