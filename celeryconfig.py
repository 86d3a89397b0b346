"""The operator's Celery settings, built from agentflow.toml and AGENTFLOW_* variables.

`celery -A agentflow worker` loads this module (override with $AGENTFLOW_CELERY_CONFIG).
Edit a copy to add Celery settings of your own; keep the first line so that AgentFlow's
mapping of `[runner]`, `[broker]` and `[monitoring]` stays in force.
"""

from agentflow._redis.celery_settings import build_celery_config

globals().update(build_celery_config())
