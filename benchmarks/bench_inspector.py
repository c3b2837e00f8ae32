#!/usr/bin/env python3
"""Benchmark: the failed-task aggregate against the fastest raw read of the same data.

Loads N retry tasks (~300-byte messages made with encode_task, a realistic mix
of error strings) into a private redis-server (``--save ''``, a free port),
then measures in the same run:

- floor, pipelined HGET: ZRANGE slices of 1,000 ids, one pipeline of HGET msg per slice;
- floor, Lua batch: the aggregate's own server-side script (1,000 ids a call), bytes only;
- floor, Lua batch with the next call in flight while the current one is read;
- the aggregate (``aggregate_failures``) in a subprocess, for its peak RSS (VmHWM of the child,
  i.e. ru_maxrss of a process that did not inherit the bench's own RSS across fork).

Each size is loaded once and measured ``--repeat`` times (3): the table shows the best repeat;
``--summary-json`` writes best and median for benchmarks/run.py.

Prints tasks/s, the ratio aggregate/floor (floor = the fastest of the three),
peak RSS, and the longest single Redis call of each phase (SLOWLOG, every
command logged). Results also go to /tmp/jobrunbook-bench-inspector.json.

    .venv/bin/python benchmarks/bench_inspector.py [--tasks 100000,1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from _redis import start_redis  # noqa: E402
from jobrunbook.asynq import keys  # noqa: E402
from jobrunbook.asynq.aggregate import BATCH_LUA, DEFAULT_BATCH  # noqa: E402
from jobrunbook.asynq.messages import TaskMessage, encode_task  # noqa: E402

QUEUE = "default"
BATCH = DEFAULT_BATCH
TARGET_RATIO, TARGET_RSS_MB, TARGET_CALL_MS = 0.7, 100, 5.0


def _error(rng: random.Random) -> tuple[str, str]:
    """(task type, error) drawn from the mix a failing worker shows."""
    r = rng.random()
    if r < 0.30:
        host = f"10.0.{rng.randrange(4)}.{rng.randrange(10)}"
        prefix = rng.choice(["", "lookup user: ", "ledger write: ", "load image metadata: "])
        return rng.choice(["report:generate", "email:send", "payment:capture"]), \
            f"{prefix}dial tcp {host}:5432: connect: connection refused"
    if r < 0.50:
        return "webhook:deliver", "unexpected status 429 Too Many Requests"
    if r < 0.55:
        return "webhook:deliver", "unexpected status 503 Service Unavailable"
    if r < 0.65:
        return "report:generate", "context deadline exceeded"
    if r < 0.73:
        line = rng.choice([113, 303, 87])
        i = rng.randrange(10)
        return "image:resize", f"panic [/go/src/app/handlers/image.go:{line}]: runtime error: index out of range [{i}] with length {i}"
    if r < 0.80:
        return "payment:capture", 'handler not found for task "payment:capture"'
    if r < 0.85:
        return "report:generate", "asynq: task lease expired"
    if r < 0.90:
        return "email:send", "invalid payload: missing field user_id: skip retry for the task"
    if r < 0.95:
        return "payment:capture", f"capture order {rng.randrange(10**6)}: invalid amount_cents -{rng.randrange(10**5)} for currency USD"
    return "email:send", f"lookup user {uuid.UUID(int=rng.getrandbits(128))}: record not found"


def load(client: redis.Redis, n: int, seed: int = 1) -> float:
    rng = random.Random(seed)
    now = int(time.time())
    prefix = keys.task_key_prefix(QUEUE)
    client.sadd(keys.ALL_QUEUES, QUEUE)
    pipe = client.pipeline(transaction=False)
    zbatch: dict[str, int] = {}
    total = 0
    for _ in range(n):
        tid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        ttype, err = _error(rng)
        payload = json.dumps({"order_id": rng.randrange(10**6), "customer": f"cust_{rng.randrange(10**5):05d}",
                              "note": "x" * rng.randrange(60, 100), "currency": "USD"}).encode()
        msg = encode_task(TaskMessage(type=ttype, id=tid, queue=QUEUE, payload=payload, retry=25,
                                      retried=rng.randrange(1, 25), error_msg=err, timeout=1800,
                                      last_failed_at=now - rng.randrange(3600)))
        total += len(msg)
        pipe.hset(prefix + tid, mapping={"msg": msg, "state": "retry"})
        zbatch[tid] = now + rng.randrange(1, 3600)
        if len(zbatch) == 1000:
            pipe.zadd(keys.state_key(QUEUE, "retry"), zbatch)
            pipe.execute()
            zbatch = {}
    if zbatch:
        pipe.zadd(keys.state_key(QUEUE, "retry"), zbatch)
    pipe.execute()
    return total / n


def floor_pipeline(client: redis.Redis) -> int:
    zkey, prefix = keys.state_key(QUEUE, "retry"), keys.task_key_prefix(QUEUE)
    start = got = 0
    while True:
        ids = client.zrange(zkey, start, start + BATCH - 1)
        pipe = client.pipeline(transaction=False)
        for tid in ids:
            pipe.hget(prefix + tid.decode(), "msg")
        got += sum(1 for m in pipe.execute() if m)
        if len(ids) < BATCH:
            return got
        start += BATCH


def floor_lua(client: redis.Redis, overlap: bool) -> int:
    return floor_lua_sets(client, [(keys.state_key(QUEUE, "retry"), keys.task_key_prefix(QUEUE))], overlap, BATCH)


def floor_lua_sets(client: redis.Redis, sets: list[tuple[str, str]], overlap: bool, batch: int) -> int:
    """The fastest raw read of the failed tasks: the aggregate's own Lua script over each (zset key, task key
    prefix), ``batch`` ids a call, bytes only; with ``overlap`` the next call is in flight while one is read."""
    global BATCH
    saved, BATCH = BATCH, batch
    try:
        return sum(_floor_lua_one(client, zkey, prefix, overlap) for zkey, prefix in sets)
    finally:
        BATCH = saved


def _floor_lua_one(client: redis.Redis, zkey: str, prefix: str, overlap: bool) -> int:
    sha = client.script_load(BATCH_LUA)
    conn = client.connection_pool.get_connection()
    start = got = 0
    try:
        conn.send_command("EVALSHA", sha, 1, zkey, start, start + BATCH - 1, prefix)
        while True:
            if overlap:
                start += BATCH
                conn.send_command("EVALSHA", sha, 1, zkey, start, start + BATCH - 1, prefix)
            n, msgs, *_gone = conn.read_response()
            got += len(msgs)
            if n < BATCH:
                if overlap:
                    conn.read_response()
                return got
            if not overlap:
                start += BATCH
                conn.send_command("EVALSHA", sha, 1, zkey, start, start + BATCH - 1, prefix)
    finally:
        client.connection_pool.release(conn)


_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[2])
import redis
from jobrunbook.asynq.aggregate import aggregate_failures
client = redis.Redis(port=int(sys.argv[1]), socket_timeout=10)
t = time.perf_counter()
agg = aggregate_failures(client, ["default"], batch=int(sys.argv[3]))
elapsed = time.perf_counter() - t
# VmHWM: ru_maxrss would carry the forking parent's RSS across exec on Linux
hwm = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")]
print(json.dumps({"elapsed": elapsed, "tasks": agg.tasks, "groups": len(agg.groups), "complete": agg.complete,
                  "anomalies": agg.anomalies, "maxrss_kb": hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "pandas_imported": "pandas" in sys.modules}))
"""


def aggregate_in_child(port: int) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(port), str(ROOT / "lib"), str(BATCH)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


def longest_call_ms(client: redis.Redis) -> tuple[float, str]:
    entries = client.slowlog_get(100000)
    if not entries:
        return 0.0, ""
    worst = max(entries, key=lambda e: e["duration"])
    cmd = worst["command"]
    cmd = cmd.decode(errors="replace") if isinstance(cmd, bytes) else str(cmd)
    return worst["duration"] / 1000.0, cmd.split(" ")[0]


def timed(client: redis.Redis, fn) -> tuple[float, int, float]:
    client.slowlog_reset()
    t = time.perf_counter()
    got = fn()
    elapsed = time.perf_counter() - t
    return elapsed, got, longest_call_ms(client)[0]


def run(n: int, port: int, client: redis.Redis, repeat: int = 1) -> dict:
    """Load ``n`` tasks once, then measure the floors and the aggregate ``repeat`` times (each repeat's
    figures in ``repeats``; the result's own are the best repeat's)."""
    client.flushall()
    t = time.perf_counter()
    size = load(client, n)
    load_s = time.perf_counter() - t
    reps = []
    for _ in range(max(1, repeat)):
        res: dict = {"tasks": n, "batch": BATCH, "avg_msg_bytes": round(size), "load_seconds": round(load_s, 1),
                     "floors": {}}
        for name, fn in (("pipelined HGET", lambda: floor_pipeline(client)),
                         ("Lua batch", lambda: floor_lua(client, False)),
                         ("Lua batch, 2 in flight", lambda: floor_lua(client, True))):
            elapsed, got, longest = timed(client, fn)
            assert got == n, (name, got, n)
            res["floors"][name] = {"seconds": elapsed, "tasks_per_s": n / elapsed, "longest_call_ms": longest}
        client.slowlog_reset()
        child = aggregate_in_child(port)
        assert child["tasks"] == n and child["complete"], child
        longest, cmd = longest_call_ms(client)
        best = min(res["floors"].values(), key=lambda f: f["seconds"])
        res["aggregate"] = {"seconds": child["elapsed"], "tasks_per_s": n / child["elapsed"],
                            "groups": child["groups"], "peak_rss_mb": child["maxrss_kb"] / 1024,
                            "longest_call_ms": longest, "longest_cmd": cmd,
                            "pandas_imported": child["pandas_imported"]}
        res["ratio"] = best["seconds"] / child["elapsed"]
        reps.append(res)
    out = max(reps, key=lambda r: r["ratio"])
    out["repeats"] = [{"floor_s": min(f["seconds"] for f in r["floors"].values()), **r["aggregate"]} for r in reps]
    return out


def summary_rows(results: list[dict]) -> list[dict]:
    from _summary import row

    rows = []
    for r in results:
        label = f"{r['tasks'] // 1000}k" if r["tasks"] < 1_000_000 else f"{r['tasks'] / 1e6:g}M"
        reps = r["repeats"]
        rows += [
            row("inspector", f"aggregate {label}: speed vs Lua batch floor", [x["seconds"] for x in reps], unit="s",
                floors=[x["floor_s"] for x in reps], higher_is_better=True, limit=TARGET_RATIO,
                target=f">= {TARGET_RATIO} of the floor's speed"),
            row("inspector", f"aggregate {label}: peak RSS", [x["peak_rss_mb"] for x in reps], unit="MB",
                bound=TARGET_RSS_MB, target=f"< {TARGET_RSS_MB} MB"),
            row("inspector", f"aggregate {label}: longest Redis call", [x["longest_call_ms"] for x in reps],
                unit="ms", bound=TARGET_CALL_MS, target=f"<= {TARGET_CALL_MS:g} ms"),
        ]
    return rows


def print_table(results: list[dict]) -> None:
    print(f"{'tasks':>9}  {'measure':<26}{'seconds':>9}{'tasks/s':>12}{'longest call':>14}{'peak RSS':>10}")
    for r in results:
        for name, f in r["floors"].items():
            print(f"{r['tasks']:>9,}  {'floor: ' + name:<26}{f['seconds']:>9.2f}{f['tasks_per_s']:>12,.0f}"
                  f"{f['longest_call_ms']:>11.2f} ms")
        a = r["aggregate"]
        print(f"{r['tasks']:>9,}  {'aggregate':<26}{a['seconds']:>9.2f}{a['tasks_per_s']:>12,.0f}"
              f"{a['longest_call_ms']:>11.2f} ms{a['peak_rss_mb']:>7.0f} MB")
        ok = (r["ratio"] >= TARGET_RATIO, a["peak_rss_mb"] < TARGET_RSS_MB, a["longest_call_ms"] <= TARGET_CALL_MS)
        print(f"{'':>11}ratio aggregate/floor {r['ratio']:.2f} (target >= {TARGET_RATIO}: {'ok' if ok[0] else 'MISSED'}), "
              f"peak RSS {'ok' if ok[1] else 'MISSED'} (< {TARGET_RSS_MB} MB), longest call "
              f"{'ok' if ok[2] else 'MISSED'} (<= {TARGET_CALL_MS} ms); {a['groups']} groups, "
              f"~{r['avg_msg_bytes']} B/msg, loaded in {r['load_seconds']} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="100000,1000000", help="comma-separated task counts")
    ap.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="ids per Lua call (floors and aggregate)")
    ap.add_argument("--json-out", default="/tmp/jobrunbook-bench-inspector.json")
    ap.add_argument("--repeat", type=int, default=3, help="measurements of each size (the data loaded once)")
    ap.add_argument("--summary-json", default="", help="the rows for benchmarks/run.py's summary")
    args, _unknown = ap.parse_known_args(argv)
    global BATCH
    BATCH = args.batch
    counts = [int(x.replace("_", "")) for x in args.tasks.split(",") if x]
    tmp = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    proc, port = start_redis(tmp, slowlog_max_len=100_000)
    results = []
    try:
        client = redis.Redis(port=port, socket_timeout=30)
        for n in counts:
            results.append(run(n, port, client, args.repeat))
            print_table(results[-1:])
            sys.stdout.flush()
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    Path(args.json_out).write_text(json.dumps({"host_cpus": os.cpu_count(), "results": results}, indent=2))
    print(f"results: {args.json_out}")
    from _summary import load_avg, write

    write(args.summary_json, "inspector", summary_rows(results), load=load_avg())
    return 0


if __name__ == "__main__":
    sys.exit(main())
