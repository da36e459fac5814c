#!/usr/bin/env bash
# Debian packages that `make run` and `make test` use besides Python: bubblewrap, the sandbox of
# the local node's runs (reprolab_agent.sandbox). Installed as root via apt-get when missing;
# otherwise says what the agent falls back to. Never fails the caller: the agent reports the
# isolation it could get.
set -uo pipefail

if command -v bwrap >/dev/null; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "== installing Debian's bubblewrap (sandbox for notebook runs)"
  if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap) >/dev/null; then
    exit 0
  fi
  echo "!! could not install bubblewrap: runs will be isolated by uid only" >&2
else
  echo "!! bubblewrap (bwrap) is not installed: runs on the local node are NOT sandboxed" >&2
  echo "!! (as root: apt-get install bubblewrap)" >&2
fi
exit 0
