"""Load test: N concurrent signed-in analysts replaying the dashboard's callbacks against a running portal.

Run from a second process (``bench/scale load`` starts gunicorn and then this), loopback only, bounded in
time. Each simulated analyst is a thread with its own HTTP session (its own cookies): it signs in with the
password form (GET /login for the CSRF token, POST /login), opens the dashboard (GET /, Dash's layout and
dependencies, then the first filter state's callbacks), then makes filter changes until the time is up,
picked at random from the typical ones (one borough, one category, last 28 days, a drawn polygon, a
theme, ...), with a think time between them. A filter change is what the browser does: ``sync_state``, then
every data panel at once (up to 6 connections, as a browser opens to one host); its latency is the wall time
until the last panel answers. An error is any answer other than 200/204, or no answer within ``--timeout``.
Prints one JSON object (latencies, error counts and rates, per users) as its last line.

    python -m bench.loadtest --url http://127.0.0.1:8050 --users 10 --duration 60 --accounts FILE
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from bench.common import login_form_token, percentile

BROWSER_CONNECTIONS = 6  # what browsers open to one host
MAP_KEY = "map-legend"  # the map callback's key in the bodies (its first output besides the area layers)


class Recorder:
    """Latencies and errors from every analyst thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.samples: dict[str, list[float]] = {}
        self.errors: dict[str, int] = {}
        self.first_errors: list[str] = []

    def add(self, kind: str, seconds: float) -> None:
        with self.lock:
            self.samples.setdefault(kind, []).append(seconds * 1000)

    def error(self, kind: str, what: str) -> None:
        with self.lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1
            if len(self.first_errors) < 5:
                self.first_errors.append(f"{kind}: {what}")


def post_callback(session: requests.Session, base: str, body: str, timeout: float) -> requests.Response:
    response = session.post(f"{base}/_dash-update-component", data=body, timeout=timeout,
                            headers={"Content-Type": "application/json"})
    if response.status_code not in (200, 204):
        raise RuntimeError(f"HTTP {response.status_code}")
    return response


def with_boundaries_loaded(body: str, loaded: set[str]) -> str:
    """The map callback's body as a browser sends it once it holds the boundaries of the ``loaded`` area
    layers: their hideout says so, and the server sends only the new colours (a fresh body asks for them)."""
    if not loaded:
        return body
    request = json.loads(body)
    for dep in request["state"]:
        if dep and dep["property"] == "hideout" and dep["id"].rsplit("-", 1)[-1] in loaded:
            dep["value"] = {"loaded": True}
    return json.dumps(request)


def boundaries_sent(response) -> dict[str, str]:
    """The area layers whose boundaries' URL a map response set, by level (the layer then fetches it)."""
    sent = json.loads(response.content).get("response", {})
    return {component.rsplit("-", 1)[-1]: props["url"] for component, props in sent.items() if "url" in props}


def fetch_boundaries(session, base: str, urls: dict[str, str], cached: dict[str, tuple[float, int]],
                     timeout: float) -> None:
    """GET each boundaries URL as the map layer does (gzipped), unless this browser's cache holds it already
    (the URL names its content and may be kept for a year); ``cached`` maps URL to (ms, bytes over the wire)."""
    for url in urls.values():
        if url not in cached:
            started = time.perf_counter()
            response = session.get(f"{base}{url}", timeout=timeout, headers={"Accept-Encoding": "gzip"},
                                   stream=True)
            if response.status_code != 200:
                raise RuntimeError(f"GET {url} answered {response.status_code}")
            size = len(response.raw.read())
            cached[url] = ((time.perf_counter() - started) * 1000, size)


def filter_change(session, base: str, bodies: dict[str, str], pool: ThreadPoolExecutor, timeout: float,
                  recorder: Recorder, loaded: set[str] | None = None,
                  cached: dict[str, tuple[float, int]] | None = None) -> bool:
    """sync_state, then every panel at once (and the map's boundaries when they are new to this browser);
    records the change's wall time; False on any error. ``loaded``: the area layers whose boundaries this
    analyst's page holds (updated from the map's answer); ``cached``: the browser's cache of their URLs."""
    sync_key, *panel_keys = list(bodies)
    loaded = set() if loaded is None else loaded
    cached = {} if cached is None else cached
    started = time.perf_counter()
    try:
        post_callback(session, base, bodies[sync_key], timeout)
        futures = {k: pool.submit(post_callback, session, base,
                                  with_boundaries_loaded(bodies[k], loaded) if k == MAP_KEY else bodies[k], timeout)
                   for k in panel_keys}
        for key, future in futures.items():
            response = future.result()
            if key == MAP_KEY:
                urls = boundaries_sent(response)
                fetch_boundaries(session, base, urls, cached, timeout)
                loaded |= set(urls)
    except Exception as exc:  # noqa: BLE001 - every failure is an error of the run, counted and shown
        recorder.error("filter change", repr(exc)[:200])
        return False
    recorder.add("filter change", time.perf_counter() - started)
    return True


def analyst(base: str, email: str, password: str, changes: list[dict[str, str]], deadline: float,
            think: tuple[float, float], timeout: float, recorder: Recorder, seed: int) -> None:
    """One signed-in analyst until ``deadline``."""
    rng = random.Random(seed)
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=BROWSER_CONNECTIONS))
    pool = ThreadPoolExecutor(max_workers=BROWSER_CONNECTIONS)
    try:
        started = time.perf_counter()
        try:
            token = login_form_token(session.get(f"{base}/login", timeout=timeout).text)
            response = session.post(f"{base}/login", data={"email": email, "password": password, "csrf_token": token},
                                    timeout=timeout, allow_redirects=False)
            if response.status_code != 302 or "/login" in response.headers.get("Location", ""):
                raise RuntimeError(f"sign-in answered {response.status_code} -> {response.headers.get('Location')}")
            recorder.add("sign-in", time.perf_counter() - started)
            started = time.perf_counter()
            for path in ("/", "/_dash-layout", "/_dash-dependencies"):
                page = session.get(f"{base}{path}", timeout=timeout)
                if page.status_code != 200:
                    raise RuntimeError(f"GET {path} answered {page.status_code}")
        except Exception as exc:  # noqa: BLE001
            recorder.error("sign-in and page", repr(exc)[:200])
            return
        recorder.add("open dashboard (page)", time.perf_counter() - started)
        loaded: set[str] = set()
        cached: dict[str, tuple[float, int]] = {}
        filter_change(session, base, changes[0], pool, timeout, recorder, loaded, cached)  # the page's first state
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(*think))
            if time.monotonic() >= deadline:
                break
            filter_change(session, base, rng.choice(changes), pool, timeout, recorder, loaded, cached)
    finally:
        pool.shutdown(wait=True)
        session.close()


def run(base: str, accounts: list[tuple[str, str]], changes: list[dict[str, str]], users: int, duration: float,
        think: tuple[float, float] = (1.0, 3.0), timeout: float = 30.0, ramp: float = 5.0) -> dict:
    """``users`` analysts (accounts reused round-robin) for ``duration`` seconds, started over ``ramp``
    seconds; the figures as a dict."""
    recorder = Recorder()
    started = time.monotonic()
    deadline = started + duration
    threads = []
    for i in range(users):
        email, password = accounts[i % len(accounts)]
        thread = threading.Thread(target=analyst, args=(base, email, password, changes, deadline, think, timeout,
                                                         recorder, i), daemon=True)
        threads.append(thread)
        thread.start()
        time.sleep(ramp / max(users, 1))
    for thread in threads:
        thread.join(timeout=max(1.0, deadline - time.monotonic()) + timeout + 10)
    elapsed = time.monotonic() - started
    result = {"users": users, "duration_s": round(elapsed, 1), "think_s": list(think), "kinds": {}}
    for kind in sorted(set(recorder.samples) | set(recorder.errors)):
        times = recorder.samples.get(kind, [])
        errors = recorder.errors.get(kind, 0)
        result["kinds"][kind] = {
            "n": len(times), "errors": errors, "error_rate": errors / max(1, len(times) + errors),
            "p50_ms": round(statistics.median(times), 1) if times else None,
            "p95_ms": round(percentile(times, 0.95), 1) if times else None,
            "max_ms": round(max(times), 1) if times else None}
    result["first_errors"] = recorder.first_errors
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="the portal, e.g. http://127.0.0.1:8050 (loopback only)")
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--think", default="1,3", help="think time between filter changes, seconds MIN,MAX")
    parser.add_argument("--timeout", type=float, default=30)
    parser.add_argument("--accounts", required=True,
                        help="JSON file: {\"accounts\": [[email, password], ...], \"changes\": [{callback: body}, ...]}")
    args = parser.parse_args(argv)
    if not args.url.startswith(("http://127.", "http://localhost")):
        parser.error("--url must be a loopback address (the load test never leaves the machine)")
    with open(args.accounts) as fh:
        spec = json.load(fh)
    think = tuple(float(x) for x in args.think.split(","))
    result = run(args.url.rstrip("/"), [tuple(a) for a in spec["accounts"]], spec["changes"], args.users,
                 args.duration, think, args.timeout)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
