"""The Celery app. `celery -A agentflow worker` finds it as `agentflow.app` (loaded on first
use by the package's ``__getattr__``).

Configuration is read lazily from the `celeryconfig` module (``$AGENTFLOW_CELERY_CONFIG``
names another), which AgentFlow ships at the top level and builds from agentflow.toml; the
broker URL is therefore resolved (or an embedded Redis started) only when first needed.
"""

from __future__ import annotations

import os

from celery import Celery

from agentflow import flower_security

# Task events go out on the worker's loop (agentflow._worker.task_events).
app = Celery("agentflow", set_as_current=False, events="agentflow._worker.task_events:Events")
app.config_from_object(os.environ.get("AGENTFLOW_CELERY_CONFIG", "celeryconfig"))

# `celery -A agentflow flower`: loopback and credentials by default (docs/security.md).
flower_security.install(app)
