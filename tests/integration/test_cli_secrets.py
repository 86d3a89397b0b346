"""No CLI command prints the Redis password unless asked to with --show-password."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import cli_env

pytestmark = pytest.mark.integration

SECRET = "s3cr3t-do-not-print"
# Nothing has to listen there: `config show` never connects, and `redis url` with a
# configured URL only prints it.
URLS = [
    f"redis://:{SECRET}@127.0.0.1:6399/0",
    f"rediss://agentflow:{SECRET}@redis.invalid:6380/0?ssl_cert_reqs=required",
    f"redis://127.0.0.1:6399/0?password={SECRET}",
    f"unix:///run/redis/redis.sock?db=0&password={SECRET}",
    f"sentinel://:{SECRET}@127.0.0.1:26379;sentinel://:{SECRET}@127.0.0.2:26379",
]


def _cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = cli_env(AGENTFLOW_BROKER__URL=url, AGENTFLOW_BROKER__RESULT_URL=url,
                  AGENTFLOW_BROKER__EMBEDDED="false")  # fmt: skip
    return subprocess.run([sys.executable, "-m", "agentflow.cli", *args],
                          capture_output=True, text=True, timeout=120, env=env)  # fmt: skip


@pytest.mark.parametrize("url", URLS)
def test_redis_url_masks_the_password(url: str) -> None:
    done = _cli("redis", "url", url=url)
    assert done.returncode == 0, done
    assert SECRET not in done.stdout + done.stderr
    assert "********" in done.stdout
    assert done.stdout.strip() == url.replace(SECRET, "********")


@pytest.mark.parametrize("url", URLS)
def test_config_show_masks_the_password(url: str) -> None:
    for args in (["config", "show"], ["config", "show", "--json"]):
        done = _cli(*args, url=url)
        assert done.returncode == 0, done
        assert SECRET not in done.stdout + done.stderr
        assert "********" in done.stdout


def test_show_password_prints_the_secret_when_asked() -> None:
    done = _cli("redis", "url", "--show-password", url=URLS[0])
    assert done.returncode == 0, done
    assert done.stdout.strip() == URLS[0]
