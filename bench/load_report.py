#!/usr/bin/env python3
"""Markdown for BENCHMARKS.md from the loadgen's JSON reports in a bench/load_*.sh output directory.

    load_report.py saturated|latency|rss|reconnect|dbtx OUT_DIR     a fragment on stdout
    load_report.py section OUT_DIR BENCHMARKS.md                    (re)writes the "## Load (issue 7)" section
"""
import json
import os
import re
import sys

HEADING = "## Load (issue 7)"


def load(out, name):
    path = os.path.join(out, name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def ms(us):
    return f"{us / 1000:.2f} ms"


def verdict(met, text):
    return f"**{'met' if met else 'missed'}** ({text})"


def cpu_us(r):
    s = r.get("server") or {}
    return s.get("cpu_us_per_rpc")


def saturated(out):
    rows, best, cpu = [], {}, {}
    lines = ["### Saturated unary RPC/s (closed loop)", ""]
    for server in ("agentwire", "go"):
        for transport in ("ws", "tcp"):
            r = load(out, f"saturated-{server}-{transport}")
            if not r:
                continue
            c = r["config"]
            if not rows:
                lines.append(
                    f"`bench/load_saturated.sh`: {c['agents']} sessions × {c['concurrency']} concurrent "
                    f"`UpdateStats` calls, {r['measured_seconds']:.0f} s measured, loadgen and server on the same "
                    "2 cores."
                )
                lines += ["", "| server | transport | RPC/s | p50 | p99 | server CPU per RPC | server cores |",
                          "| --- | --- | --- | --- | --- | --- | --- |"]
            s = r.get("server") or {}
            tput = r["calls"]["throughput_per_second"]
            best[server] = max(best.get(server, 0), tput)
            if transport == "ws":
                cpu[server] = cpu_us(r)
            rows.append(
                f"| {server} | {transport} | {tput:,.0f} | {ms(r['latency_us']['p50'])} | {ms(r['latency_us']['p99'])} "
                f"| {s.get('cpu_us_per_rpc', 0):.1f} µs | {s.get('cpu_cores', 0):.2f} |"
            )
    lines += rows + [""]
    if "agentwire" in best:
        a = best["agentwire"]
        lines.append(f"- ≥ 100k unary RPC/s: {verdict(a >= 100_000, f'{a:,.0f} RPC/s, {a / 100_000:.2f}× the target')}.")
        if cpu.get("agentwire"):
            cap = 2 / (cpu["agentwire"] / 1e6)
            lines.append(
                f"  At {cpu['agentwire']:.1f} µs of server CPU per call, both cores given to the server alone would "
                f"carry at most ~{cap:,.0f} RPC/s."
            )
    if "agentwire" in best and "go" in best:
        lines.append(f"- Throughput against Go: {best['agentwire'] / best['go']:.2f}× ({best['go']:,.0f} RPC/s for Go).")
    if cpu.get("agentwire") and cpu.get("go"):
        ratio = cpu["go"] / cpu["agentwire"]
        lines.append(
            f"- ≥ 10× less server CPU per RPC than Go (WebSocket, saturated): {verdict(ratio >= 10, f'{ratio:.1f}×')}."
        )
    return "\n".join(lines) + "\n"


def latency(out):
    lines = ["### Latency at a fixed rate (open loop)", ""]
    rows, at3k, cpu3k = [], None, {}
    for rate in (1000, 3000, 10000):
        for server in ("agentwire", "go"):
            r = load(out, f"latency-{server}-{rate}")
            if not r:
                continue
            c = r["config"]
            if not rows:
                lines.append(
                    f"`bench/load_latency.sh`: `UpdateStats` over WebSocket from {c['agents']} sessions on a fixed "
                    f"schedule, {r['measured_seconds']:.0f} s per rate. Latency counts from the *intended* send time "
                    "(a stalled server cannot hide behind fewer samples); \"service\" is from the actual send. The "
                    "loadgen's timer has 1 ms granularity, so sends leave up to ~1 ms late (send lag) and that lag is "
                    "inside the intended-time figures."
                )
                lines += ["", "| offered RPC/s | server | achieved | p50 | p99 | p99.9 | service p50 / p99 | send lag p99 "
                          "| server CPU per RPC |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
            l, sv, lag = r["latency_us"], r.get("service_latency_us") or {}, r.get("send_lag_us") or {}
            rows.append(
                f"| {rate:,} | {server} | {r['calls']['throughput_per_second']:,.0f} | {ms(l['p50'])} | {ms(l['p99'])} "
                f"| {ms(l['p999'])} | {ms(sv.get('p50', 0))} / {ms(sv.get('p99', 0))} | {ms(lag.get('p99', 0))} "
                f"| {cpu_us(r) or 0:.1f} µs |"
            )
            if rate == 3000:
                cpu3k[server] = cpu_us(r)
                if server == "agentwire":
                    at3k = r
    lines += rows + [""]
    if at3k:
        p99, sp99 = at3k["latency_us"]["p99"], (at3k.get("service_latency_us") or {}).get("p99", 0)
        lines.append(
            f"- p99 ≤ 1 ms at 3k RPC/s: {verdict(p99 <= 1000, f'{ms(p99)} from the intended time, {p99 / 1000:.2f}× the target')}; "
            f"from the actual send {ms(sp99)} ({verdict(sp99 <= 1000, 'service time')})."
        )
    if cpu3k.get("agentwire") and cpu3k.get("go"):
        ratio = cpu3k["go"] / cpu3k["agentwire"]
        lines.append(f"- Server CPU per RPC at 3k RPC/s, Go ÷ agentwire: {verdict(ratio >= 10, f'{ratio:.1f}×, target ≥ 10×')}.")
    return "\n".join(lines) + "\n"


def rss(out):
    lines = ["### RSS per idle session", ""]
    rows, at10k = [], {}
    for n in (1000, 10000, 50000):
        for server in ("agentwire", "go"):
            for streams in ("none", "streams"):
                r = load(out, f"rss-{server}-{n}-{streams}")
                if not r:
                    continue
                if not rows:
                    lines.append(
                        "`bench/load_idle_rss.sh`: a fresh server per row, N WebSocket sessions connected and held "
                        "idle (\"streams\": each also holding StreamDERPMaps and Coordinate open, as an agent does); "
                        "per session = (VmRSS after − VmRSS before the first connect) ÷ sessions connected."
                    )
                    lines += ["", "| sessions | server | held | connected | RSS before → after | per session |",
                              "| --- | --- | --- | --- | --- | --- |"]
                s = r.get("server") or {}
                per = (s.get("rss_per_session_bytes") or 0) / 1024
                rows.append(
                    f"| {n:,} | {server} | {streams} | {r['sessions']['connected_at_end']:,} | "
                    f"{(s.get('rss_before_kib') or 0) / 1024:.0f} → {(s.get('rss_after_kib') or 0) / 1024:.0f} MiB "
                    f"| {per:.1f} KiB |"
                )
                if n == 10000:
                    at10k[(server, streams)] = per
    lines += rows + [""]
    for streams in ("none", "streams"):
        a = at10k.get(("agentwire", streams))
        if a is not None:
            go = at10k.get(("go", streams))
            vs = f"; Go {go:.1f} KiB, agentwire uses {a / go:.2f}× Go's" if go else ""
            lines.append(
                f"- ≤ 16 KiB per idle session at 10k ({streams}): {verdict(a <= 16, f'{a:.1f} KiB, {a / 16:.1f}× the target')}{vs}."
            )
    note = os.path.join(out, "rss-50k.note")
    if os.path.exists(note):
        with open(note) as f:
            lines.append(f"- 50k sessions: {f.read().strip()}")
    return "\n".join(lines) + "\n"


def reconnect(out):
    lines = ["### Reconnect storm", ""]
    rows, figures = [], {}
    for server in ("agentwire", "go"):
        r = load(out, f"reconnect-{server}")
        if not r:
            continue
        extra = load(out, f"reconnect-{server}-restart") or {}
        if not rows:
            lines.append(
                f"`bench/load_reconnect.sh`: {r['config']['agents']:,} idle WebSocket sessions holding both streams; "
                "the server is killed with SIGKILL and started again at once on the same port (agentwire: the same "
                "SQLite file). Agents reconnect with Coder's backoff (100 ms doubling to 10 s), at most "
                "512 dials in flight from the one loadgen process. \"All back\" runs from the first drop the "
                "loadgen saw; \"after restart\" from the moment the new server process was started."
            )
            lines += ["", "| server | sessions | drops | reconnects | all back (from first drop) | all back (after restart) "
                      "| connect p99 |", "| --- | --- | --- | --- | --- | --- | --- |"]
        storms = r["reconnect"]["storms"]
        total = storms[0]["recovered_after_ms"] if storms else None
        after = None
        if storms and total is not None and extra.get("restart_unix_ms"):
            after = storms[0]["started_unix_ms"] + total - extra["restart_unix_ms"]
        figures[server] = total
        fmt = lambda v: "not all back" if v is None else f"{v / 1000:.2f} s"
        rows.append(
            f"| {server} | {r['sessions']['agents']:,} | {r['sessions']['drops']:,} | {r['sessions']['reconnects']:,} "
            f"| {fmt(total)} | {fmt(after)} | {ms(r['connect_us']['p99'])} |"
        )
    lines += rows + [""]
    a = figures.get("agentwire")
    if "agentwire" in figures:
        lines.append(
            f"- 10k sessions back within 5 s: {verdict(a is not None and a <= 5000, 'never all back' if a is None else f'{a / 1000:.2f} s')}."
        )
    if a and figures.get("go"):
        lines.append(f"- Against Go: {figures['go'] / a:.2f}× (Go {figures['go'] / 1000:.2f} s).")
    return "\n".join(lines) + "\n"


def dbtx(out):
    cases = []
    for name, what in (("dbtx", "steady state (agents already ready)"), ("dbtx-startup", "all agents starting at once")):
        r, m = load(out, f"{name}-agentwire"), load(out, f"{name}-metrics")
        if r and m:
            cases.append((what, r, m))
    if not cases:
        return ""
    first = cases[0][1]
    lines = [
        "### Database write transactions, realistic load",
        "",
        f"`bench/load_db_tx.sh`: {first['config']['agents']:,} agents in realistic mode (two metadata keys each, "
        "collected every 1–10 s and reported every second when changed; stats every 30 s as the server says; both "
        "streams held; random phases) against agentwire on SQLite with default batchers; counters read from "
        f"`/metrics` over {cases[0][2]['seconds']:.0f} s, starting 10 s after the last session connected.",
        "",
        "| case | RPC/s (server) | write transactions/s | SQL statements/s | BatchUpdateMetadata p50 / p99 "
        "| UpdateStats p50 / p99 | GetManifest p50 (connect burst) | server CPU |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for what, r, m in cases:
        secs = m["seconds"]
        tx = (m["tx_after"] - m["tx_before"]) / secs
        q = (m["queries_after"] - m["queries_before"]) / secs
        rpcs = (m["rpcs_after"] - m["rpcs_before"]) / secs
        def rpc(name, key):
            lat = (r["rpcs"].get("/coder.agent.v2.Agent/" + name) or {}).get("latency_us") or {}
            return ms(lat.get(key, 0))

        lines.append(
            f"| {what} | {rpcs:,.0f} | **{tx:.2f}** | {q:,.0f} | {rpc('BatchUpdateMetadata', 'p50')} / "
            f"{rpc('BatchUpdateMetadata', 'p99')} | {rpc('UpdateStats', 'p50')} / {rpc('UpdateStats', 'p99')} | "
            f"{rpc('GetManifest', 'p50')} | {((r.get('server') or {}).get('cpu_cores') or 0):.2f} cores |"
        )
    lines += [
        "",
        "The Go reference server has no database, so there is no ratio here.",
    ]
    return "\n".join(lines) + "\n"


def section(out, benchmarks):
    parts = []
    for name in ("saturated", "latency", "rss", "reconnect", "dbtx"):
        path = os.path.join(out, name + ".md")
        if os.path.exists(path):
            with open(path) as f:
                parts.append(f.read().strip())
    notes = os.path.join(os.path.dirname(os.path.abspath(__file__)), "load_notes.md")
    if os.path.exists(notes):
        with open(notes) as f:
            parts.append(f.read().strip())
    env = os.path.join(out, "environment.md")
    head = [HEADING, ""]
    if os.path.exists(env):
        with open(env) as f:
            head.append(f.read().strip())
        head.append("")
    body = "\n".join(head) + "\n" + "\n\n".join(parts) + "\n"
    with open(benchmarks) as f:
        text = f.read()
    # Replace our section (up to the next "## " heading) or append it; other sections stay as they are.
    pattern = re.compile(r"^## Load \(issue 7\)\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: body + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + body
    with open(benchmarks, "w") as f:
        f.write(text.rstrip("\n") + "\n")


def main():
    kind, out = sys.argv[1], sys.argv[2]
    if kind == "section":
        section(out, sys.argv[3])
        return
    print(globals()[kind](out), end="")


if __name__ == "__main__":
    main()
