//! One relay connection over any byte stream (the upgraded HTTP connection or the WebSocket fallback): the login
//! (server key, the client's sealed info, the server's sealed info), then a reader that relays what the client
//! sends and a writer that drains its outbox, in one task, until either side ends, the server stops or a limit is
//! broken.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::frame::{self, ClientFrame, DecodeLimits, Decoder, FrameError, PROTOCOL_VERSION};
use super::keys::{BoxError, NodeKey};
use super::relay::{Admission, Client, NotHereLimiter, Relay};
use super::stats::DropReason;

/// Bytes the writer gathers before one write: many small packets go out together, one large one alone.
const WRITE_BATCH: usize = 64 << 10;
/// Bytes asked of the socket per read; a frame larger than this is read whole into a buffer grown for it.
const READ_CHUNK: usize = 16 << 10;

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("no login within {0:?}")]
    LoginTimeout(Duration),
    #[error("client info: {0}")]
    ClientInfoBox(#[from] BoxError),
    #[error("client info: {0}")]
    ClientInfoJson(#[from] serde_json::Error),
    #[error("a mesh frame without the mesh key")]
    NotMesh,
    #[error("write blocked for {0:?}")]
    WriteTimeout(Duration),
}

impl ConnError {
    /// Whether the client broke the protocol or a limit, as opposed to leaving or being too slow.
    fn is_protocol(&self) -> bool {
        !matches!(self, ConnError::Io(_) | ConnError::WriteTimeout(_))
    }
}

/// What a client says of itself at login (tailscale's `clientInfo`); only the mesh key would matter, and this
/// relay has none.
#[derive(Debug, Deserialize)]
struct ClientInfo {
    #[serde(rename = "meshKey", default)]
    mesh_key: String,
    #[allow(dead_code)]
    #[serde(rename = "version", default)]
    version: u32,
}

/// Serves one connection until it ends or `stop` fires; holds `admission` until then.
pub async fn serve<T>(io: T, admission: Admission, stop: CancellationToken)
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let relay = admission.relay().clone();
    relay.stats().accepts.fetch_add(1, Ordering::Relaxed);
    let result = tokio::select! {
        result = run(io, &relay) => result,
        _ = stop.cancelled() => Ok(()),
    };
    if let Err(err) = result {
        if err.is_protocol() {
            relay.stats().protocol_errors.fetch_add(1, Ordering::Relaxed);
            tracing::info!(error = %err, "DERP connection ended");
        } else {
            tracing::debug!(error = %err, "DERP connection ended");
        }
    }
    drop(admission);
}

async fn run<T>(io: T, relay: &Arc<Relay>) -> Result<(), ConnError>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let config = relay.config();
    let (mut reader, mut writer) = tokio::io::split(io);
    let limits =
        DecodeLimits { max_packet_size: config.max_packet_size, max_client_info_size: config.max_client_info_size };
    let mut decoder = Decoder::new(limits);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);

    let mut out = BytesMut::new();
    frame::encode_server_key(&mut out, &relay.public_key());
    writer.write_all(&out).await?;
    writer.flush().await?;
    let key = tokio::time::timeout(config.login_timeout, login(&mut reader, &mut decoder, &mut buf, relay))
        .await
        .map_err(|_| ConnError::LoginTimeout(config.login_timeout))??;

    let client = relay.register(key);
    let served = async {
        out.clear();
        let info = format!(r#"{{"version":{PROTOCOL_VERSION}}}"#);
        frame::encode_server_info(&mut out, &relay.private_key().seal_to(&key, info.as_bytes())?);
        writer.write_all(&out).await?;
        writer.flush().await?;
        tokio::select! {
            result = read_loop(&mut reader, decoder, buf, relay, &client) => result,
            result = write_loop(&mut writer, relay, &client) => result,
        }
    }
    .await;
    relay.unregister(&client);
    served
}

/// Reads the ClientInfo frame and opens it; the client's key on success.
async fn login<R: AsyncRead + Unpin>(
    reader: &mut R,
    decoder: &mut Decoder,
    buf: &mut BytesMut,
    relay: &Relay,
) -> Result<NodeKey, ConnError> {
    let frame = loop {
        if let Some(frame) = decoder.decode(buf)? {
            break frame;
        }
        read_more(reader, buf).await?;
    };
    let ClientFrame::ClientInfo { key, sealed } = frame else {
        // The decoder accepts nothing else before the login.
        return Err(FrameError::NotLogin(0).into());
    };
    let json = relay.private_key().open_from(&key, &sealed)?;
    let info: ClientInfo = serde_json::from_slice(&json)?;
    if !info.mesh_key.is_empty() {
        tracing::debug!(client = %key, "a client offered a mesh key; this relay does not mesh");
    }
    Ok(key)
}

async fn read_more<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut BytesMut) -> Result<(), ConnError> {
    buf.reserve(READ_CHUNK);
    if reader.read_buf(buf).await? == 0 {
        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
    }
    Ok(())
}

async fn read_loop<R: AsyncRead + Unpin>(
    reader: &mut R,
    mut decoder: Decoder,
    mut buf: BytesMut,
    relay: &Relay,
    client: &Arc<Client>,
) -> Result<(), ConnError> {
    let mut not_here = NotHereLimiter::new();
    loop {
        while let Some(frame) = decoder.decode(&mut buf)? {
            relay.note_activity(client);
            match frame {
                ClientFrame::SendPacket { dst, packet } => relay.send(client, dst, packet, &mut not_here),
                ClientFrame::Ping(data) => client.push_pong(data),
                // Only for statistics in tailscale; nothing here depends on a client's home relay.
                ClientFrame::NotePreferred(_) => {}
                // A second login frame is skipped by the decoder; this arm is never taken.
                ClientFrame::ClientInfo { .. } => {}
                ClientFrame::ForwardPacket { .. } | ClientFrame::WatchConns | ClientFrame::ClosePeer(_) => {
                    return Err(ConnError::NotMesh)
                }
            }
        }
        buf.reserve(READ_CHUNK);
        if reader.read_buf(&mut buf).await? == 0 {
            // The client hung up: a normal end.
            return Ok(());
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(writer: &mut W, relay: &Relay, client: &Client) -> Result<(), ConnError> {
    let config = relay.config();
    let mut out = BytesMut::with_capacity(WRITE_BATCH);
    // tailscale's jitter is up to 5 s on 60 s: a twelfth, so keep-alives of many clients do not fall together.
    let jitter = (config.keepalive / 12).as_millis().max(1) as u64;
    let keepalive = || config.keepalive + Duration::from_millis(fastrand::u64(0..jitter));
    let mut next_keepalive = tokio::time::Instant::now() + keepalive();
    loop {
        if !client.has_pending() {
            tokio::select! {
                _ = client.woken() => {}
                _ = tokio::time::sleep_until(next_keepalive) => {}
            }
        }
        out.clear();
        let batch = relay.take_batch(client, WRITE_BATCH);
        for (peer, reason) in &batch.peer_gone {
            frame::encode_peer_gone(&mut out, peer, *reason);
        }
        if let Some(data) = &batch.pong {
            frame::encode_pong(&mut out, data);
        }
        let mut bytes = 0;
        for item in &batch.packets {
            frame::encode_recv_packet(&mut out, &item.src, &item.packet);
            bytes += item.packet.len();
        }
        if tokio::time::Instant::now() >= next_keepalive {
            frame::encode_keep_alive(&mut out);
            next_keepalive = tokio::time::Instant::now() + keepalive();
        }
        if out.is_empty() {
            continue;
        }
        let written = tokio::time::timeout(config.write_timeout, async {
            writer.write_all(&out).await?;
            writer.flush().await
        })
        .await;
        let failed = match written {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(ConnError::Io(err)),
            Err(_) => Some(ConnError::WriteTimeout(config.write_timeout)),
        };
        let stats = relay.stats();
        if let Some(err) = failed {
            for _ in &batch.packets {
                stats.record_drop(DropReason::WriteError);
            }
            return Err(err);
        }
        stats.packets_sent.fetch_add(batch.packets.len() as u64, Ordering::Relaxed);
        stats.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
        stats.peer_gone_frames.fetch_add(batch.peer_gone.len() as u64, Ordering::Relaxed);
    }
}
