"""Log-in benchmark: what signing in costs, and what the server-side session check adds to every request.

Builds its own database (``safestats_bench_login`` in the embedded cluster, or SAFESTATS_BENCH_DATABASE_URL),
migrated to head, with one viewer. Then times, through Flask's test client against the real app:

* a password sign-in (GET /login for the CSRF token, POST /login: throttle claim, argon2id verify at
  OWASP's parameters, session row) — dominated by argon2 by design;
* an authenticated request to a route that does nothing else (``/_reload-hash``, Dash's smallest route), so
  the figure is the login guard: the session row looked up (and marked seen at most once a minute) and the
  user loaded — what every Dash callback now pays;
* one throttle claim on its own (the atomic upsert every attempt makes).

Prints p50/p95 ms per operation and the load average.

    bench/login [--repeats 200]
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from bench.common import bench_database, timed

REPO_ROOT = Path(__file__).resolve().parent.parent
EMAIL, PASSWORD = "bench.viewer@bench.example", "a benchmark login passphrase"


def main(argv=None) -> int:
    from bench.dashboard import percentile

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT))

    from dashapp import create_app
    from dashapp.auth import upsert_user
    from db import get_engine, migrate
    from safestats.login_security import claim_attempt, clear_attempts

    url = bench_database("safestats_bench_login")
    print("bench/login: migrating a fresh database ...", flush=True)
    migrate.upgrade(url)
    engine = get_engine(url)
    upsert_user(engine, EMAIL, PASSWORD, "Bench viewer", "GLA", "viewer")
    app = create_app(url)

    def sign_in():
        client = app.test_client()
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)
        response = client.post("/login", data={"email": EMAIL, "password": PASSWORD, "csrf_token": token})
        assert response.status_code == 302, response.status_code
        return client

    signed_in = sign_in()

    def guarded_request():
        assert signed_in.get("/_reload-hash").status_code == 200

    def throttle_claim():
        claim_attempt(engine, "someone@bench.example", 10**9, 15)

    results = {
        "password sign-in (GET + POST /login)": timed(sign_in, max(10, args.repeats // 10)),
        "authenticated request (login guard + session check)": timed(guarded_request, args.repeats),
        "throttle claim (one upsert)": timed(throttle_claim, args.repeats),
    }
    clear_attempts(engine, "someone@bench.example")
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} ({os.cpu_count()} cores)")
    for name, times in results.items():
        print(f"{name:<55} n={len(times):<4} p50 {percentile(times, 0.5):7.2f} ms   p95 {percentile(times, 0.95):7.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
