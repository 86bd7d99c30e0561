#!/usr/bin/env python3
"""Writes fuzz/seeds/<target>/ from the recorded Go conversation in tests/fixtures/go-wire (index.json and the
two .bin files). Run through `scripts/fuzz.sh seed`; the output is checked in and deterministic.

Input formats are documented in fuzz/src/{frame,packet,conn}.rs and fuzz/ws/src/lib.rs; the encoders here
mirror them.
"""

import json
import shutil
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "go-wire"
SEEDS = ROOT / "fuzz" / "seeds"

KIND = {"Invoke": 1, "Message": 2, "Error": 3, "Cancel": 4, "Close": 5, "CloseSend": 6, "InvokeMetadata": 7}


def slug(call):
    name = "".join(c if c.isalnum() else "-" for c in call["name"]).strip("-")
    while "--" in name:
        name = name.replace("--", "-")
    return f"{call['step']:02d}-{name}"


def data_splits(call, direction):
    """The stream payload cut where the Go sender's yamux Data frames cut it."""
    payload = bytes.fromhex(call[f"{direction}_stream_payload_hex"])
    cuts, at = [], 0
    for frame in call[f"{direction}_yamux_frames"]:
        if frame["type"] == "Data" and frame["length"]:
            cuts.append(payload[at : at + frame["length"]])
            at += frame["length"]
    assert b"".join(cuts) == payload, call["name"]
    return cuts


# ---- drpc_conn / drpc_conn_client op encoders (fuzz/src/conn.rs) ----
DEFAULT_LIMITS = 0xFF
CURRENT = 0x00


def u16(n):
    assert n <= 0xFFFF
    return struct.pack("<H", n)


def compact_id(v):
    if v < 0xFE:
        return bytes([v])
    if v == (1 << 64) - 1:
        return b"\xfe"
    return b"\xff" + struct.pack("<Q", v)


def op_input(data):
    return b"\x00" + u16(len(data)) + data


OP_POLL_EVENTS = b"\x01"
OP_POLL_ONE = b"\x02"
OP_TRANSMIT = b"\x08"


def op_send_message(data, sel=CURRENT):
    return b"\x03" + bytes([sel]) + u16(len(data)) + data


def op_send_close_send(sel=CURRENT):
    return b"\x04" + bytes([sel])


def op_send_error(code, text, sel=CURRENT):
    text = text[:255]
    return b"\x05" + bytes([sel]) + compact_id(code) + bytes([len(text)]) + text


def op_send_close(sel=CURRENT):
    return b"\x06" + bytes([sel])


def op_start_call(method, metadata=()):
    out = b"\x09" + bytes([len(method)]) + method + bytes([len(metadata)])
    for key, value in metadata:
        out += bytes([len(key)]) + key + bytes([len(value)]) + value
    return out


def sends_for(packets):
    """The send ops that reproduce a recorded side's packets (after the Invoke, which start_call writes)."""
    ops = b""
    for p in packets:
        data = bytes.fromhex(p["data_hex"])
        if p["kind"] == "Message":
            ops += op_send_message(data)
        elif p["kind"] == "CloseSend":
            ops += op_send_close_send()
        elif p["kind"] == "Error":
            ops += op_send_error(int.from_bytes(data[:8], "big"), data[8:])
        elif p["kind"] == "Close":
            ops += op_send_close()
    return ops


# ---- ws_bytes op encoders (fuzz/ws/src/lib.rs) ----
def ws_binary(data):
    return b"\x00" + u16(len(data)) + data


WS_TEXT, WS_PING, WS_CLOSE, WS_END, WS_FLUSH, WS_SHUTDOWN = b"\x01", b"\x02", b"\x03", b"\x05", b"\x08", b"\x09"


def ws_error(text):
    return b"\x04" + bytes([len(text)]) + text


def ws_read(cap):
    return b"\x06" + u16(cap)


def ws_write(length, fill):
    return b"\x07" + u16(length) + bytes([fill])


def ws_sink(mode):
    return b"\x0a" + bytes([mode])


def ws_tick(secs):
    return b"\x0c" + bytes([secs])


WS_PLAIN, WS_PINGS = b"\x00", b"\x01"  # header: WsByteStream::new or ::with_pings(15 s, 30 s)


def ws_messages(raw, frames, limit=None):
    """A yamux byte stream as Go's websocket.NetConn sends it: one message per write (header, then body)."""
    out = []
    for f in frames[:limit]:
        start = f["offset"]
        out.append(raw[start : start + 12])
        if f["type"] == "Data" and f["length"]:
            out.append(raw[start + 12 : start + 12 + f["length"]])
    return out


def varint(v):
    out = b""
    while v >= 0x80:
        out += bytes([(v & 0x7F) | 0x80])
        v >>= 7
    return out + bytes([v])


def read_varint(buf, at):
    value, shift = 0, 0
    while True:
        b = buf[at]
        value |= (b & 0x7F) << shift
        at += 1
        if b < 0x80:
            return value, at
        shift += 7


def restream(payload, stream):
    """The same dRPC frames with another stream id (for a second call on one connection)."""
    out, at = b"", 0
    while at < len(payload):
        control = payload[at]
        _, at = read_varint(payload, at + 1)
        message, at = read_varint(payload, at)
        length, at = read_varint(payload, at)
        out += bytes([control]) + varint(stream) + varint(message) + varint(length) + payload[at : at + length]
        at += length
    return out


# ---- agentapi_requests (fuzz/agentapi/src/lib.rs): selector byte + request protobuf, ids as placeholders ----
AGENT_RPCS = [
    "GetManifest", "GetServiceBanner", "UpdateStats", "UpdateLifecycle", "BatchUpdateAppHealths", "UpdateStartup",
    "BatchUpdateMetadata", "BatchCreateLogs", "GetAnnouncementBanners", "ScriptCompleted",
    "GetResourcesMonitoringConfiguration", "PushResourcesMonitoringUsage", "ReportConnection", "CreateSubAgent",
    "DeleteSubAgent", "ListSubAgents", "ReportBoundaryLogs", "UpdateAppStatus", "PushContextState",
]  # agent.proto order, as agentwire::agentapi::fuzzing::Rpc::ALL (fuzz/agentapi/tests/replay.rs checks it)
APP, SCRIPT, LOG_SOURCE, SUB_AGENT = b"AWFZ:app--------", b"AWFZ:script-----", b"AWFZ:log-source-", b"AWFZ:sub-agent--"
NB_APP, NB_SCRIPT, NB_SUB_AGENT = b"AWFZ:nb-app-----", b"AWFZ:nb-script--", b"AWFZ:nb-subagent"


def pb_key(field, wire):
    return varint((field << 3) | wire)


def pb_int(field, v):
    return pb_key(field, 0) + varint(v & ((1 << 64) - 1))


def pb_bytes(field, data):
    if isinstance(data, str):
        data = data.encode()
    return pb_key(field, 2) + varint(len(data)) + data


def pb_double(field, v):
    return pb_key(field, 1) + struct.pack("<d", v)


def pb_time(field, seconds=1767225600, nanos=0):
    return pb_bytes(field, pb_int(1, seconds) + (pb_int(2, nanos) if nanos else b""))


def agentapi_seed(rpc, request):
    return bytes([AGENT_RPCS.index(rpc)]) + request


def agentapi_seeds(calls):
    """The recorded agent's requests (its ids swapped for placeholders), then hand-built ones for the rest."""
    manifest = next(c for c in calls if c["name"] == "GetManifest")["server_to_client"][0]["message"]
    b64 = lambda s: __import__("base64").b64decode(s)
    recorded_ids = {
        b64(manifest["apps"][0]["id"]): APP,
        b64(manifest["scripts"][0]["id"]): SCRIPT,
        b64(manifest["scripts"][0]["log_source_id"]): LOG_SOURCE,
    }
    out = {}
    for call in calls:
        rpc = call["rpc"].rsplit("/", 1)[1]
        if not call["rpc"].startswith("/coder.agent.v2.Agent/") or rpc not in AGENT_RPCS:
            continue
        message = next(p for p in call["client_to_server"] if p["kind"] == "Message")
        request = bytes.fromhex(message["data_hex"])
        for real, placeholder in recorded_ids.items():
            request = request.replace(real, placeholder)
        out[f"{AGENT_RPCS.index(rpc):02d}-{rpc}-recorded-{call['step']:02d}"] = agentapi_seed(rpc, request)

    datapoint = pb_time(1) + pb_bytes(2, pb_int(1, 3 << 30) + pb_int(2, 4 << 30))
    datapoint += pb_bytes(3, pb_bytes(1, "/home/coder") + pb_int(2, 45) + pb_int(3, 50))
    http = pb_bytes(3, pb_bytes(1, "GET") + pb_bytes(2, "https://example.com/") + pb_bytes(3, "allow example.com"))
    sub_app = pb_bytes(5, pb_bytes(1, "web") + pb_bytes(13, "http://localhost:3000") + pb_int(11, 1))
    resource = pb_bytes(1, "/home/coder/AGENTS.md") + pb_bytes(3, "0" * 64) + pb_int(4, 12) + pb_int(5, 1)
    resource += pb_bytes(10, pb_bytes(1, "# notes"))
    hand = {
        "GetManifest": {"empty": b""},
        "GetServiceBanner": {"empty": b""},
        "UpdateStats": {
            "empty": b"",
            "metrics": pb_bytes(1, pb_bytes(1, pb_bytes(1, "ssh") + pb_int(2, 2)) + pb_int(2, 2) + pb_double(3, 1.5)
                                + pb_int(11, 2) + pb_bytes(12, pb_bytes(1, "up") + pb_int(2, 2) + pb_double(3, 1.0))),
        },
        "UpdateLifecycle": {"no-time": pb_bytes(1, pb_int(1, 4)), "unspecified": pb_bytes(1, b"")},
        "BatchUpdateAppHealths": {
            "own-app": pb_bytes(1, pb_bytes(1, APP) + pb_int(2, 4)),
            "neighbour-app": pb_bytes(1, pb_bytes(1, NB_APP) + pb_int(2, 4)),
            "twice": pb_bytes(1, pb_bytes(1, APP) + pb_int(2, 3)) + pb_bytes(1, pb_bytes(1, APP) + pb_int(2, 4)),
        },
        "UpdateStartup": {
            "envbox": pb_bytes(1, pb_bytes(1, "v2.30.0") + pb_bytes(2, "/home/coder") + pb_bytes(3, b"\x01\x03")),
            "bad-version": pb_bytes(1, pb_bytes(1, "2.30")),
        },
        "BatchUpdateMetadata": {
            "own-key": pb_bytes(2, pb_bytes(1, "cpu") + pb_bytes(2, pb_time(1) + pb_bytes(3, "12%"))),
            "long-value": pb_bytes(2, pb_bytes(1, "cpu") + pb_bytes(2, pb_bytes(3, "x" * 3000) + pb_bytes(4, "e"))),
        },
        "BatchCreateLogs": {
            "nil-source": pb_bytes(1, bytes(16)) + pb_bytes(2, pb_time(1) + pb_bytes(2, "hello") + pb_int(3, 3)),
            "own-source": pb_bytes(1, LOG_SOURCE) + pb_bytes(2, pb_time(1) + pb_bytes(2, "a\x00b") + pb_int(3, 5)),
        },
        "GetAnnouncementBanners": {"empty": b""},
        "ScriptCompleted": {
            "own-script": pb_bytes(1, pb_bytes(1, SCRIPT) + pb_time(2) + pb_time(3, 1767225602) + pb_int(5, 0)),
            "neighbour-script": pb_bytes(1, pb_bytes(1, NB_SCRIPT) + pb_time(2) + pb_time(3) + pb_int(6, 1)),
        },
        "GetResourcesMonitoringConfiguration": {"empty": b""},
        "PushResourcesMonitoringUsage": {"one-nok": pb_bytes(1, datapoint), "empty": b""},
        "ReportConnection": {
            "disconnect": pb_bytes(1, pb_bytes(1, bytes(range(16))) + pb_int(2, 2) + pb_int(3, 2) + pb_time(4)
                                   + pb_bytes(5, "10.0.0.1") + pb_int(6, 1) + pb_bytes(7, "closed")),
        },
        "CreateSubAgent": {
            "new": pb_bytes(1, "devcontainer") + pb_bytes(2, "/workspaces/p") + pb_bytes(3, "amd64")
                   + pb_bytes(4, "linux") + sub_app + pb_bytes(6, b"\x00\x02"),
            "existing": pb_bytes(7, SUB_AGENT) + pb_bytes(2, "/workspaces/q") + pb_bytes(6, b"\x01"),
            "neighbours": pb_bytes(7, NB_SUB_AGENT),
            "bad-name": pb_bytes(1, "not valid"),
        },
        "DeleteSubAgent": {"own": pb_bytes(1, SUB_AGENT), "neighbours": pb_bytes(1, NB_SUB_AGENT)},
        "ListSubAgents": {"empty": b""},
        "ReportBoundaryLogs": {
            "one": pb_bytes(1, pb_int(1, 1) + pb_time(2) + http + pb_int(4, 7)) + pb_bytes(2, "s1")
                   + pb_bytes(3, "curl"),
        },
        "UpdateAppStatus": {
            "working": pb_bytes(1, "web") + pb_int(2, 0) + pb_bytes(3, "building") + pb_bytes(4, "https://x/"),
            "unknown-slug": pb_bytes(1, "nope") + pb_int(2, 2),
        },
        "PushContextState": {
            "initial": pb_int(1, 1) + pb_bytes(2, "ab" * 32) + pb_bytes(3, resource) + pb_int(4, 1),
        },
    }
    for rpc, variants in hand.items():
        for name, request in variants.items():
            out[f"{AGENT_RPCS.index(rpc):02d}-{rpc}-{name}"] = agentapi_seed(rpc, request)
    return out


def main():
    index = json.loads((FIXTURES / "index.json").read_text())
    calls = index["calls"]
    seeds = {name: {} for name in ("drpc_frame", "drpc_packet", "drpc_conn", "drpc_conn_client", "ws_bytes")}
    seeds["agentapi_requests"] = agentapi_seeds(calls)

    for call in calls:
        s = slug(call)
        c2s = bytes.fromhex(call["client_to_server_stream_payload_hex"])
        s2c = bytes.fromhex(call["server_to_client_stream_payload_hex"])

        # drpc_frame: raw payloads.
        seeds["drpc_frame"][f"{s}-c2s"] = c2s
        seeds["drpc_frame"][f"{s}-s2c"] = s2c

        # drpc_packet, frames mode: cap 4 MiB (index 7), chunking varied by step; GetManifest also at cap 256.
        chunk_seed = call["step"] % 16
        seeds["drpc_packet"][f"{s}-c2s-frames"] = bytes([(chunk_seed << 4) | (7 << 1)]) + c2s
        seeds["drpc_packet"][f"{s}-s2c-frames"] = bytes([(chunk_seed << 4) | (7 << 1)]) + s2c
        if call["step"] == 1:
            seeds["drpc_packet"][f"{s}-s2c-frames-cap256"] = bytes([(1 << 4) | (5 << 1)]) + s2c
        # drpc_packet, round-trip mode: each recorded packet with data, split index varied, cap exact or 4 MiB.
        for direction in ("client_to_server", "server_to_client"):
            for i, p in enumerate(call[direction]):
                data = bytes.fromhex(p["data_hex"])
                split_index = (call["step"] + i) % 8
                config = 1 | (split_index << 1) | (((call["step"] * 3 + i) % 16) << 4)
                body = bytes([KIND[p["kind"]]]) + compact_id(p["drpc_stream_id"]) + compact_id(p["message_id"])
                cap_selector = 0 if i % 2 == 0 else 2
                short = "c2s" if direction == "client_to_server" else "s2c"
                seeds["drpc_packet"][f"{s}-{short}-{i}-{p['kind']}-roundtrip"] = (
                    bytes([config]) + body + bytes([cap_selector]) + data
                )

        # drpc_conn (server role): the client's bytes as its yamux frames delivered them, the recorded answer.
        cuts = data_splits(call, "client_to_server")
        ops = bytes([DEFAULT_LIMITS]) + op_input(cuts[0]) + OP_POLL_EVENTS
        ops += sends_for(call["server_to_client"]) + OP_TRANSMIT
        for cut in cuts[1:]:
            ops += op_input(cut) + OP_POLL_EVENTS
        ops += OP_TRANSMIT
        seeds["drpc_conn"][s] = ops
        if call["step"] in (1, 9, 11):
            # The same bytes in 7-byte pieces, one event at a time.
            ops = bytes([DEFAULT_LIMITS])
            for at in range(0, len(cuts[0]), 7):
                ops += op_input(cuts[0][at : at + 7]) + OP_POLL_ONE
            ops += OP_POLL_EVENTS + sends_for(call["server_to_client"]) + OP_TRANSMIT
            ops += b"".join(op_input(cut) for cut in cuts[1:]) + OP_POLL_EVENTS
            seeds["drpc_conn"][f"{s}-7byte"] = ops

        # drpc_conn_client: start the call, send the request, read the recorded answer, close as Go did.
        request = [p for p in call["client_to_server"] if p["kind"] in ("Message", "CloseSend")]
        closing = [p for p in call["client_to_server"] if p["kind"] == "Close"]
        ops = bytes([DEFAULT_LIMITS]) + op_start_call(call["rpc"].encode()) + sends_for(request) + OP_TRANSMIT
        for cut in data_splits(call, "server_to_client"):
            ops += op_input(cut) + OP_POLL_EVENTS
        ops += sends_for(closing) + OP_TRANSMIT
        seeds["drpc_conn_client"][s] = ops

    # Metadata and a second call on one connection (client side), and the server side seeing them.
    first, second = calls[0], calls[1]
    md = [(b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"), (b"k", b"v")]
    ops = bytes([DEFAULT_LIMITS]) + op_start_call(first["rpc"].encode(), md) + op_send_message(b"")
    ops += op_send_close_send() + OP_TRANSMIT + op_start_call(second["rpc"].encode()) + OP_TRANSMIT
    ops += op_input(restream(bytes.fromhex(second["server_to_client_stream_payload_hex"]), 2))
    ops += OP_POLL_EVENTS + OP_TRANSMIT
    seeds["drpc_conn_client"]["metadata-and-second-call"] = ops
    # Server: InvokeMetadata {"k": "v"} + Invoke + Message + CloseSend, then a superseding call on stream 2.
    server_in = bytes.fromhex("0f0101080a060a016b120176") + bytes.fromhex("030102062f612e422f43") + bytes.fromhex(
        "05010300" + "0d010400"
    )
    server_in += bytes.fromhex("030201062f612e422f44") + bytes.fromhex("05020200")
    ops = bytes([DEFAULT_LIMITS]) + op_input(server_in) + OP_POLL_EVENTS + op_send_message(b"\x08\x01")
    ops += op_send_close_send() + OP_TRANSMIT
    seeds["drpc_conn"]["metadata-and-superseding-call"] = ops
    # Small limits: max packet 64 (index 2), split 7 (index 2), metadata 16 (index 1).
    limits = 2 | (2 << 3) | (1 << 6)
    ops = bytes([limits]) + op_input(data_splits(calls[0], "client_to_server")[0]) + OP_POLL_EVENTS
    ops += op_send_message(bytes(range(40))) + op_send_error(12, b"Unimplemented") + OP_TRANSMIT
    seeds["drpc_conn"]["small-limits"] = ops

    # ws_bytes: the recorded yamux byte streams as WebSocket messages, read in varied sizes, writes and flushes.
    for direction, short in (("client_to_server", "c2s"), ("server_to_client", "s2c")):
        raw = (FIXTURES / index[direction]["file"]).read_bytes()
        frames = index["yamux_frames"][direction]
        ops = b""
        for i, message in enumerate(ws_messages(raw, frames)):
            ops += ws_binary(message)
            if i % 5 == 0:
                ops += WS_PING
            if i % 3 == 0:
                ops += ws_read([1, 12, 100, 4096][i % 4])
        ops += WS_CLOSE + ws_binary(b"after close") + ws_read(4096)
        seeds["ws_bytes"][f"{short}-close"] = WS_PLAIN + ops
        ops = b"".join(ws_binary(m) + ws_read(7) for m in ws_messages(raw, frames, 6))
        seeds["ws_bytes"][f"{short}-text"] = WS_PLAIN + ops + WS_TEXT + ws_read(64) + ws_read(64)
        seeds["ws_bytes"][f"{short}-error"] = WS_PLAIN + ops + ws_error(b"connection reset") + ws_read(0) + ws_read(64)
        # With pings: a quiet spell that pings, traffic that keeps it alive, then a silence that drops it.
        ops = b""
        for i, message in enumerate(ws_messages(raw, frames, 12)):
            ops += ws_binary(message) + ws_read(4096) + ws_tick(8)
            if i % 4 == 3:
                ops += ws_read(4096)
        ops += ws_tick(16) + ws_read(4096) + ws_tick(31) + ws_read(4096) + ws_read(4096)
        seeds["ws_bytes"][f"{short}-pings"] = WS_PINGS + ops
    raw = (FIXTURES / index["client_to_server"]["file"]).read_bytes()
    ops = WS_PLAIN + ws_write(12, 0) + ws_write(45, 7) + WS_FLUSH + ws_write(40000, 1) + ws_write(40000, 2)
    ops += ws_sink(1) + ws_write(30000, 3) + WS_FLUSH + ws_sink(2) + WS_FLUSH + ws_sink(0) + WS_FLUSH
    ops += ws_binary(raw[:12]) + ws_read(4096) + WS_END + ws_read(4096) + WS_SHUTDOWN
    seeds["ws_bytes"]["writes-and-sink-modes"] = ops

    if SEEDS.exists():
        shutil.rmtree(SEEDS)
    total = 0
    for target, files in seeds.items():
        folder = SEEDS / target
        folder.mkdir(parents=True)
        for name, data in sorted(files.items()):
            (folder / name).write_bytes(data)
            total += 1
        print(f"{target}: {len(files)} seeds", file=sys.stderr)
    print(f"wrote {total} seeds under {SEEDS.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
