#!/usr/bin/env python3
"""Samples, once a second, what bench/coderd.sh compares: the CPU and RSS of named server processes (by pid file,
so a restarted server is followed), PostgreSQL's CPU, and the database's top-level statements by role (coderd,
agentwire), commits and transaction ids.

    coderd_sample.py --out FILE.jsonl --psql PSQL --port PORT --postmaster PID --pid-file NAME=PATH...
    coderd_sample.py --once --postmaster PID --pid-file NAME=PATH...      one /proc reading as JSON on stdout

CPU is cumulative: a restarted process's time is added to what its predecessor had used, so a storm's restart shows
as a continuing line. PostgreSQL's is the postmaster's own and its reaped children's (cutime/cstime), plus the live
backends', so connections that close keep counting.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def stat(pid):
    """(utime+stime, cutime+cstime) in seconds, rss in KiB, ppid; None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    # The command may hold spaces and parentheses: fields start after the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return {
        "cpu": (utime + stime) / TICK,
        "children_cpu": (cutime + cstime) / TICK,
        "rss_kib": int(fields[21]) * PAGE_KIB,
        "ppid": int(fields[1]),
    }


def read_pid(path):
    try:
        with open(path) as f:
            text = f.read().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def postgres(postmaster):
    """PostgreSQL's CPU seconds so far and the RSS of its processes (shared memory counted in each)."""
    root = stat(postmaster)
    if root is None:
        return None
    cpu = root["cpu"] + root["children_cpu"]
    rss = root["rss_kib"]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        s = stat(int(entry))
        if s and s["ppid"] == postmaster:
            cpu += s["cpu"]
            rss += s["rss_kib"]
    return {"cpu_s": round(cpu, 2), "rss_kib": rss}


class Procs:
    def __init__(self, pid_files):
        self.pid_files = pid_files
        self.seen = {}  # name -> (pid, last cpu)
        self.total = {name: 0.0 for name in pid_files}

    def read(self):
        out = {}
        for name, path in self.pid_files.items():
            pid = read_pid(path)
            s = stat(pid) if pid else None
            if s is None:
                out[name] = {"pid": pid, "alive": False, "cpu_s": round(self.total[name], 2), "rss_kib": None}
                continue
            last = self.seen.get(name)
            if last and last[0] == pid:
                self.total[name] += s["cpu"] - last[1]
            else:
                self.total[name] += s["cpu"]
            self.seen[name] = (pid, s["cpu"])
            out[name] = {"pid": pid, "alive": True, "cpu_s": round(self.total[name], 2), "rss_kib": s["rss_kib"]}
        return out


DB_QUERY = """SELECT json_build_object(
  'calls', (SELECT coalesce(json_object_agg(r.rolname, s.calls), '{}') FROM
            (SELECT userid, sum(calls) AS calls FROM pg_stat_statements GROUP BY userid) s
            JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname IN ('coderd', 'agentwire')),
  'xact_commit', (SELECT xact_commit FROM pg_stat_database WHERE datname = 'coder'),
  'next_xid', pg_snapshot_xmax(pg_current_snapshot())::text::bigint)"""


def db(psql, port):
    try:
        out = subprocess.run(
            [psql, "-X", "-q", "-At", "-h", "127.0.0.1", "-p", str(port), "-U", "benchmon", "-d", "coder", "-c", DB_QUERY],
            capture_output=True, text=True, timeout=5,
        )
        return json.loads(out.stdout) if out.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError):
        return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out")
    p.add_argument("--psql")
    p.add_argument("--port", type=int)
    p.add_argument("--postmaster", type=int, required=True)
    p.add_argument("--pid-file", action="append", default=[])
    p.add_argument("--once", action="store_true")
    p.add_argument("--interval", type=float, default=1.0)
    args = p.parse_args()
    pid_files = dict(item.split("=", 1) for item in args.pid_file)
    procs = Procs(pid_files)
    if args.once:
        print(json.dumps({"unix_ms": int(time.time() * 1000), "procs": procs.read(), "postgres": postgres(args.postmaster)}))
        return
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    next_tick = time.monotonic()
    with open(args.out, "a") as out:
        while not stop:
            point = {
                "unix_ms": int(time.time() * 1000),
                "procs": procs.read(),
                "postgres": postgres(args.postmaster),
                "db": db(args.psql, args.port),
            }
            out.write(json.dumps(point) + "\n")
            out.flush()
            next_tick += args.interval
            time.sleep(max(0.0, next_tick - time.monotonic()))


if __name__ == "__main__":
    sys.exit(main())
