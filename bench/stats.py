"""The registry's /v1/wharf/stats with many services: registers SERVICES services (one
instance each), pushes a report from one proxy covering all of them (each with a minute of
traffic, a latency sketch of a few dozen buckets and two instances), then times READS reads
of /v1/wharf/stats (the whole view: merge, health counts, JSON). Loopback only.

    python3 bench/stats.py URL [SERVICES] [READS]
"""

import json
import statistics
import sys
import time
import urllib.request

url, services, reads = sys.argv[1], int(sys.argv[2] if len(sys.argv) > 2 else 1000), int(sys.argv[3] if len(sys.argv) > 3 else 50)


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method)
    with urllib.request.urlopen(request) as answer:
        return answer.read()


for i in range(services):
    call("PUT", "/v1/agent/service/register", {"Name": f"svc-{i}", "ID": f"svc-{i}-1", "Port": 10000 + i})


def window(requests):
    indexes = list(range(150, 150 + 40))
    counts = [requests // 40] * 40
    return {"requests": requests, "failures": requests // 100, "seconds": 60,
            "latency": {"indexes": indexes, "counts": counts, "total": sum(counts)}}


report = {"proxy": "bench@gateway", "caller": "gateway", "services": [
    {"name": f"svc-{i}", "minute": window(6000), "ten_minutes": window(60000),
     "history": [[100, 1]] * 60,
     "instances": [{"id": f"svc-{i}-{j}", "address": "127.0.0.1:1", "in_flight": 1, "minute": window(3000)}
                   for j in (1, 2)]}
    for i in range(services)]}
# In parts of 200 services, as a proxy sends a large report (the registry takes bodies up to
# 1 MiB).
started = time.monotonic()
for part, first in enumerate(range(0, services, 200)):
    call("PUT", "/v1/wharf/stats/report", {**report, "proxy": f"{report['proxy']}#{part}",
                                           "services": report["services"][first:first + 200]})
pushed = (time.monotonic() - started) * 1000

times = []
size = 0
for _ in range(reads):
    started = time.monotonic()
    size = len(call("GET", "/v1/wharf/stats"))
    times.append((time.monotonic() - started) * 1000)
times.sort()
print(f"stats: {services} services; a report of all of them taken in {pushed:.1f} ms; "
      f"GET /v1/wharf/stats ({size // 1024} KiB) over {reads} reads: "
      f"p50 {statistics.median(times):.1f} ms, p99 {times[int(len(times) * 0.99) - 1]:.1f} ms, max {times[-1]:.1f} ms")
