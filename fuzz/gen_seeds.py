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


def main():
    index = json.loads((FIXTURES / "index.json").read_text())
    calls = index["calls"]
    seeds = {name: {} for name in ("drpc_frame", "drpc_packet", "drpc_conn", "drpc_conn_client", "ws_bytes")}

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
