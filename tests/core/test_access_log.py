"""Each request is logged once: `make run`'s server (daphne's runserver, DEBUG on) wrote every
access line and every "Not Found" warning twice, once by the console handler Django's default
logging gives the "django" logger and once by root's, which its records also reach.

A real server under the embedded settings, real requests, and the lines it wrote counted."""

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tests.integration.servers import ROOT, free_port, stopping, wait_until


def fetch(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:  # not listening yet
        return 0


def test_each_request_is_logged_once_by_the_embedded_server(tmp_path: Path):
    port = free_port()
    log = tmp_path / "server.log"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.local",
        DJANGO_DEBUG="true",  # as `make run`: Django's own console handler is active only then
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        DJANGO_MEDIA_ROOT=str(tmp_path / "media"),
    )
    base = f"http://127.0.0.1:{port}"
    with (
        log.open("wb") as out,
        stopping(
            subprocess.Popen(
                [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        ) as server,
    ):
        wait_until(lambda: fetch(f"{base}/static/css/site.css") == 200, timeout=60, what="runserver", process=server)
        assert fetch(f"{base}/static/css/site.css?counted") == 200
        assert fetch(f"{base}/no-such-page/") == 404
        # Duplicates of a line are written in the same logging call, so once a later request's
        # line is there, the earlier ones are complete.
        fetch(f"{base}/static/css/site.css?last")
        wait_until(lambda: "site.css?last" in log.read_text(), timeout=20, what="the last access line")

    lines = log.read_text().splitlines()
    assert len([line for line in lines if "GET /static/css/site.css?counted 200" in line]) == 1
    assert len([line for line in lines if "GET /no-such-page/ 404" in line]) == 1
    assert len([line for line in lines if "Not Found: /no-such-page/" in line]) == 1
