"""Exit 0 when a service answers: `probe.py postgres URL` or `probe.py redis URL`."""

import sys


def main() -> int:
    kind, url = sys.argv[1], sys.argv[2]
    try:
        if kind == "postgres":
            import psycopg

            # Connect to the maintenance database: the test database is created by the suite.
            with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", connect_timeout=3) as conn:
                conn.execute("SELECT 1")
        elif kind == "redis":
            import redis

            redis.Redis.from_url(url, socket_connect_timeout=3).ping()
        else:
            raise SystemExit(f"unknown service {kind}")
    except Exception as exc:
        print(f"{kind} not reachable: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
