"""Run the gateway app under uvicorn: one process, one event loop (uvloop when installed)."""

from __future__ import annotations

import ipaddress
import socket

from agentflow.config import Settings
from agentflow.errors import ConfigError


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def serve(settings: Settings, host: str, port: int, *, insecure_no_auth: bool = False,
          log_level: str = "warning") -> None:  # fmt: skip
    """Serve until SIGINT/SIGTERM. With `insecure_no_auth` only a loopback `host` is
    accepted."""
    import uvicorn

    from agentflow.gateway.app import INSECURE_FLAG, create_app

    if insecure_no_auth and not _loopback(host):
        raise ConfigError(f"{INSECURE_FLAG} serves loopback only, not {host!r}")
    app = create_app(settings, insecure_no_auth=insecure_no_auth)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            lifespan="on", server_header=False,
                            timeout_graceful_shutdown=5)  # fmt: skip
    uvicorn.Server(config).run()
