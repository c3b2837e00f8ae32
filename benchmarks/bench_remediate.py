"""Bench: run-all of 100,000 retry tasks, jobrunbook's batches vs asynq's one Lua call.

Starts a private redis-server (slowlog-log-slower-than 0, so every command's
server-side duration is recorded), loads identical data into db 0 and db 1,
runs jobrunbook's batched run (selection in pages + Lua batches of 1,000) on
db 0 and asynq's approach (one script over the whole set, as its runAllCmd)
on db 1, checks that both leave the same pending list, and prints a table:
total time and the longest single Redis call of each.

    python benchmarks/bench_remediate.py [--tasks 100000] [--repeat 3] [--summary-json PATH]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from _redis import start_redis  # noqa: E402
from jobrunbook.asynq import keys as K  # noqa: E402
from jobrunbook.asynq.messages import TaskMessage, encode_task  # noqa: E402
from jobrunbook.asynq.oneshot import run_all_oneshot  # noqa: E402
from jobrunbook.asynq.ops import acquire_lock, apply_in_batches  # noqa: E402
from jobrunbook.remediate import TaskFilter, select_tasks  # noqa: E402

QUEUE = "default"
TARGET_MS = 50.0


def load_retry(client: redis.Redis, n: int) -> None:
    client.sadd(K.ALL_QUEUES, QUEUE)
    pipe = client.pipeline(transaction=False)
    base = 1795980000
    for i in range(n):
        task_id = f"{i:08d}-0000-4000-8000-000000000000"
        msg = TaskMessage(type="email:send", id=task_id, queue=QUEUE, payload=b'{"user_id": %d}' % i, retry=25,
                          retried=3, error_msg="lookup user: dial tcp 10.0.0.5:5432: connect: connection refused",
                          last_failed_at=base + i // 100, timeout=1800)
        pipe.hset(K.task_key(QUEUE, task_id), mapping={"msg": encode_task(msg), "state": "retry"})
        pipe.zadd(K.state_key(QUEUE, "retry"), {task_id: base + 30 + i // 100})
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def slowest(client: redis.Redis) -> tuple[float, str, int]:
    # commands a script runs are logged too (Redis 7); each is shorter than its EVALSHA.
    # SLOWLOG itself (the bench reading the log) is left out.
    entries = [e for e in client.slowlog_get(1_000_000)
               if not (e["command"] if isinstance(e["command"], bytes) else str(e["command"]).encode())
               .upper().startswith(b"SLOWLOG")]
    if not entries:
        return 0.0, "", 0
    top = max(entries, key=lambda e: e["duration"])
    cmd = top["command"].decode(errors="replace") if isinstance(top["command"], bytes) else str(top["command"])
    return top["duration"] / 1000.0, cmd.split(" ")[0], len(entries)


def bench(n: int) -> list[dict]:
    tmp = tempfile.mkdtemp(prefix="bench-remediate-")
    proc, port = start_redis(tmp)
    try:
        ours, theirs = redis.Redis(port=port, db=0), redis.Redis(port=port, db=1)
        t0 = time.perf_counter()
        load_retry(ours, n)
        load_retry(theirs, n)
        load_s = time.perf_counter() - t0

        ours.slowlog_reset()
        t0 = time.perf_counter()
        sel = select_tasks(ours, TaskFilter(QUEUE, state="retry"), sample=0)
        t_sel = time.perf_counter() - t0
        with acquire_lock(ours, QUEUE, who="bench", what="run") as lock:
            out = apply_in_batches(ours, lock, "run", sel.ids, expected_state="retry")
        t_ours = time.perf_counter() - t0
        max_ours, cmd_ours, calls_ours = slowest(ours)

        theirs.slowlog_reset()
        t0 = time.perf_counter()
        moved = run_all_oneshot(theirs, QUEUE, "retry")
        t_theirs = time.perf_counter() - t0
        max_theirs, cmd_theirs, calls_theirs = slowest(theirs)

        pending = K.state_key(QUEUE, "pending")
        same = (ours.dump(pending) == theirs.dump(pending) and len(out.done) == moved == n
                and ours.hget(K.task_key(QUEUE, sel.ids[-1]), "state") == b"pending")
        return [
            {"approach": "jobrunbook batched (1,000/call)", "tasks": len(out.done), "total_s": t_ours,
             "select_s": t_sel, "lua_calls": out.batches, "redis_calls": calls_ours, "longest_ms": max_ours,
             "longest_cmd": cmd_ours, "same_result": same,
             "client_ms": max(out.call_seconds) * 1000},
            {"approach": "asynq one call (runAllCmd)", "tasks": moved, "total_s": t_theirs, "select_s": 0.0,
             "lua_calls": 1, "redis_calls": calls_theirs, "longest_ms": max_theirs, "longest_cmd": cmd_theirs,
             "same_result": same, "client_ms": t_theirs * 1000},
        ], load_s
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3, help="runs, each on freshly loaded data")
    ap.add_argument("--summary-json", default="", help="the rows for benchmarks/run.py's summary")
    args, _unknown = ap.parse_known_args(argv)
    reps = [bench(args.tasks) for _ in range(max(1, args.repeat))]
    rows, load_s = min(reps, key=lambda r: r[0][0]["longest_ms"])
    from _summary import load_avg, row, write

    write(args.summary_json, "remediation", [
        row("remediation", f"run-all {args.tasks // 1000}k: longest Redis call (batched)",
            [r[0][0]["longest_ms"] for r in reps], unit="ms", bound=TARGET_MS, target=f"< {TARGET_MS:.0f} ms",
            note="same pending list as asynq's one call: "
                 + ("yes" if all(r[0][0]["same_result"] for r in reps) else "NO")
                 + f"; asynq's one call: {min(r[0][1]['longest_ms'] for r in reps):.0f} ms"),
    ], load=load_avg())
    print(f"run-all of {args.tasks:,} retry tasks (loaded in {load_s:.1f} s; longest call from SLOWLOG, "
          f"slowlog-log-slower-than 0; target < {TARGET_MS:.0f} ms)")
    head = f"{'approach':34} {'tasks':>8} {'total s':>8} {'select s':>8} {'Lua calls':>9} {'logged cmds':>11} " \
           f"{'longest ms':>10} {'longest cmd':>11} {'client ms':>9} {'same keys':>9}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['approach']:34} {r['tasks']:>8,} {r['total_s']:>8.2f} {r['select_s']:>8.2f} {r['lua_calls']:>9} "
              f"{r['redis_calls']:>11,} {r['longest_ms']:>10.1f} {r['longest_cmd']:>11} {r['client_ms']:>9.1f} {str(r['same_result']):>9}")
    ok = rows[0]["longest_ms"] < TARGET_MS and rows[0]["same_result"]
    print(f"batched longest call {'<' if ok else '>='} {TARGET_MS:.0f} ms: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
