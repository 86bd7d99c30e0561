//! Frame and packet encode/decode: the per-message cost of the dRPC wire layer.

use agentwire_transport::stream::{Connection, Event, Role};
use agentwire_transport::wire::{encode_packet, Frame, Id, Kind, Metadata, PacketAssembler};
use agentwire_transport::Limits;
use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

fn frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    for size in [0usize, 64, 1024, 64 * 1024] {
        let body = vec![7u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("encode", size), &body, |b, body| {
            let mut buf = BytesMut::with_capacity(size + 32);
            b.iter(|| {
                buf.clear();
                encode_packet(&mut buf, Id::new(1, 2), Kind::Message, black_box(body), 64 * 1024);
                black_box(buf.len())
            })
        });
        let mut encoded = BytesMut::new();
        encode_packet(&mut encoded, Id::new(1, 2), Kind::Message, &body, 64 * 1024);
        let encoded = encoded.freeze();
        group.bench_with_input(BenchmarkId::new("decode_and_assemble", size), &encoded, |b, encoded| {
            b.iter(|| {
                let mut buf = BytesMut::from(&encoded[..]);
                let mut assembler = PacketAssembler::new(4 << 20);
                let frame = Frame::decode(&mut buf, 4 << 20).unwrap().unwrap();
                black_box(assembler.push(frame).unwrap())
            })
        });
    }
    group.finish();
}

/// A whole unary call through both state machines: client encodes, server parses and answers, client parses.
fn unary_state_machines(c: &mut Criterion) {
    c.bench_function("unary_call_state_machines", |b| {
        let request = vec![1u8; 200];
        let reply = vec![2u8; 200];
        b.iter(|| {
            let mut client = Connection::new(Role::Client, Limits::default());
            let mut server = Connection::new(Role::Server, Limits::default());
            let id = client.start_call("/coder.agent.v2.Agent/UpdateStats", &Metadata::new()).unwrap();
            client.send_message(id, &request).unwrap();
            client.send_close_send(id).unwrap();
            server.handle_input(&client.poll_transmit().unwrap());
            while let Some(event) = server.poll_event().unwrap() {
                if let Event::CloseSend { stream } = event {
                    server.send_message(stream, &reply).unwrap();
                    server.send_close_send(stream).unwrap();
                }
            }
            client.handle_input(&server.poll_transmit().unwrap());
            let mut got = 0;
            while let Some(event) = client.poll_event().unwrap() {
                if let Event::Message { data, .. } = event {
                    got = data.len();
                }
            }
            black_box(got)
        })
    });
}

criterion_group!(benches, frames, unary_state_machines);
criterion_main!(benches);
