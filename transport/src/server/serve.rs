//! Serving calls: one task per yamux stream, one call at a time on it, as Go's `drpcserver.ServeOne` does.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::router::{BoxFuture, Method, Router};
use super::status::Status;
use super::stream::ServerStream;
use crate::budget::{
    Evicted, MemoryCharge, SessionMemory, DEFAULT_MEMORY_WAIT, DEFAULT_SESSION_GUARANTEED_MEMORY,
    DEFAULT_SESSION_MEMORY,
};
use crate::io::{spawn_session, DriveError, DrpcStream, Mode, SessionConfig, StreamMemory};
use crate::limits::Limits;
use crate::stream::{Event, Role};

// Named in `limits` with every other transport limit; re-exported so `server::…` paths keep working.
pub use crate::limits::{DEFAULT_ACK_DELAY, DEFAULT_MAX_CONCURRENT_CALLS_PER_SESSION, DEFAULT_STREAM_SEND_QUEUE};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    pub session: SessionConfig,
    pub limits: Limits,
    /// See [`DEFAULT_MAX_CONCURRENT_CALLS_PER_SESSION`].
    pub max_concurrent_calls: usize,
    /// See [`DEFAULT_STREAM_SEND_QUEUE`].
    pub stream_send_queue: usize,
    /// See [`DEFAULT_ACK_DELAY`].
    pub ack_delay: Duration,
    /// Undispatched bytes one session may hold; see [`DEFAULT_SESSION_MEMORY`].
    pub session_memory: usize,
    /// See [`DEFAULT_SESSION_GUARANTEED_MEMORY`].
    pub session_guaranteed_memory: usize,
    /// See [`DEFAULT_MEMORY_WAIT`].
    pub memory_wait: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            session: SessionConfig::default(),
            limits: Limits::default(),
            max_concurrent_calls: DEFAULT_MAX_CONCURRENT_CALLS_PER_SESSION,
            stream_send_queue: DEFAULT_STREAM_SEND_QUEUE,
            ack_delay: DEFAULT_ACK_DELAY,
            session_memory: DEFAULT_SESSION_MEMORY,
            session_guaranteed_memory: DEFAULT_SESSION_GUARANTEED_MEMORY,
            memory_wait: DEFAULT_MEMORY_WAIT,
        }
    }
}

/// How a call ended, for observers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// A reply went out.
    Ok,
    /// An Error packet went out with this code.
    Error(u64),
    /// The peer cancelled (Close, Cancel, FIN) before the reply, or reset the stream while its call waited for a
    /// slot.
    Cancelled,
}

/// What observers see as the method of a call to a path nobody registered.
pub const UNKNOWN_METHOD: &str = "unknown";

/// Sees every call a server serves: metrics and logs hook in here. `elapsed` runs from the Invoke, so it includes
/// any wait for a call slot, as the peer's latency does.
pub trait CallObserver: Send + Sync + 'static {
    fn call_finished(&self, method: &str, outcome: CallOutcome, elapsed: Duration);
}

/// How a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// The peer closed the transport, or sent GoAway.
    PeerClosed,
    /// Our shutdown token fired; in-flight calls were given their chance to finish.
    Shutdown,
    /// The yamux session failed (protocol error from the peer, I/O error).
    Failed(yamux::ConnectionError),
    /// A memory limit stayed exhausted and this session held the most under it: it was closed with GoAway.
    OverBudget(Evicted),
}

pub struct Server<C> {
    router: Arc<Router<C>>,
    config: ServerConfig,
    observer: Option<Arc<dyn CallObserver>>,
}

impl<C> Clone for Server<C> {
    fn clone(&self) -> Self {
        Server { router: self.router.clone(), config: self.config, observer: self.observer.clone() }
    }
}

impl<C: Clone + Send + Sync + 'static> Server<C> {
    pub fn new(router: Router<C>, config: ServerConfig) -> Self {
        Server { router: Arc::new(router), config, observer: None }
    }

    pub fn with_observer(mut self, observer: Arc<dyn CallObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    pub fn router(&self) -> &Router<C> {
        &self.router
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Serves one yamux session (the server side) until the peer leaves or `shutdown` fires, under a memory budget of
    /// its own ([`ServerConfig::session_memory`]). On shutdown no new call starts, calls in flight finish (the caller
    /// bounds how long with its own timeout), then the session closes with GoAway.
    pub async fn serve_session<T>(&self, io: T, ctx: C, shutdown: CancellationToken) -> SessionEnd
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let memory = SessionMemory::standalone(self.config.session_memory);
        self.serve_session_in(io, ctx, shutdown, memory).await
    }

    /// [`Server::serve_session`] under `memory`, a session budget taken from shared pools
    /// ([`crate::budget::MemoryBudget::session`]). While the budget is exhausted, streams wait to read (streams the
    /// peer opens meanwhile too: resetting them would fail a well-behaved peer's calls over a passing peak); a limit
    /// that stays exhausted ends the session with GoAway ([`SessionEnd::OverBudget`]).
    pub async fn serve_session_in<T>(
        &self,
        io: T,
        ctx: C,
        shutdown: CancellationToken,
        memory: SessionMemory,
    ) -> SessionEnd
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (handle, mut incoming) = spawn_session(io, Mode::Server, &self.config.session);
        let calls = Arc::new(Semaphore::new(self.config.max_concurrent_calls.max(1)));
        let budget = StreamMemory { memory: memory.clone(), patience: self.config.memory_wait };
        // The session's streams run inside this task, not as tasks of their own: a call's frames then wake one task
        // instead of hopping between threads from the stream's task to the session's, and a session's calls, few at
        // a time for an agent, never needed more than one core. A panicking call ends its stream only.
        // Boxed: the set keeps a stub node the size of its future type, which would be one more idle call's worth of
        // memory in every session.
        let mut running: FuturesUnordered<BoxFuture<()>> = FuturesUnordered::new();
        let stopped = loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break Stop::Shutdown,
                evicted = memory.evicted() => break Stop::OverBudget(evicted),
                Some(()) = running.next(), if !running.is_empty() => {}
                stream = incoming.next() => match stream {
                    Some(stream) => {
                        let task = serve_stream(
                            stream,
                            budget.clone(),
                            self.router.clone(),
                            ctx.clone(),
                            self.config,
                            calls.clone(),
                            self.observer.clone(),
                            shutdown.clone(),
                        );
                        running.push(Box::pin(AssertUnwindSafe(task).catch_unwind().map(|ended| {
                            if ended.is_err() {
                                tracing::error!("a call panicked; its stream ended");
                            }
                        })));
                    }
                    None => break Stop::PeerLeft,
                },
            }
        };
        // Calls in flight finish (or end with the budget) whatever ended the session, as they would as tasks.
        let finish_calls = async { while running.next().await.is_some() {} };
        match stopped {
            Stop::Shutdown => {
                finish_calls.await;
                handle.close();
                let _ = incoming.ended().await;
                SessionEnd::Shutdown
            }
            Stop::OverBudget(evicted) => {
                tracing::warn!(
                    limit = evicted.limit,
                    held = memory.used(),
                    session_limit = memory.limit(),
                    "memory budget exhausted; closing the session that holds the most"
                );
                // GoAway first: calls in flight need not finish, and every stream task has ended with the budget
                // (see `serve_stream`).
                handle.close();
                let _ = incoming.ended().await;
                finish_calls.await;
                SessionEnd::OverBudget(evicted)
            }
            Stop::PeerLeft => {
                finish_calls.await;
                match incoming.ended().await {
                    Ok(()) => SessionEnd::PeerClosed,
                    Err(err) => SessionEnd::Failed(err),
                }
            }
        }
    }
}

enum Stop {
    Shutdown,
    OverBudget(Evicted),
    PeerLeft,
}

/// Serves every call a peer makes on one yamux stream, then half-closes it once. A call takes its slot as soon as its
/// first bytes arrive, before they are parsed: a partial Invoke counts against `max_concurrent_calls` as a running
/// call does, and a stream waiting for a slot reads no further.
#[allow(clippy::too_many_arguments)]
async fn serve_stream<C: Clone + Send + Sync + 'static>(
    stream: yamux::Stream,
    budget: StreamMemory,
    router: Arc<Router<C>>,
    ctx: C,
    config: ServerConfig,
    calls: Arc<Semaphore>,
    observer: Option<Arc<dyn CallObserver>>,
    shutdown: CancellationToken,
) {
    // Built here rather than passed in: an async fn's arguments take room in its state beside its locals.
    let mut io = DrpcStream::new(stream, Role::Server, config.limits).with_memory(budget.clone());
    // A budget that ends the session ends this task wherever it waits (a read, a write the peer does not take, a
    // call): the crate's close wakes no stream reader or writer, so a parked task would keep its bytes counted.
    tokio::select! {
        biased;
        _ = budget.memory.evicted() => return,
        () = serve_calls(&mut io, router, ctx, config, calls, observer, shutdown) => {}
    }
    if let Err(err) = io.close().await {
        tracing::trace!(error = %err, "closing stream");
    }
}

/// Serves the calls a peer makes on one stream until it stops making them.
async fn serve_calls<C: Clone + Send + Sync + 'static>(
    io: &mut DrpcStream,
    router: Arc<Router<C>>,
    ctx: C,
    config: ServerConfig,
    calls: Arc<Semaphore>,
    observer: Option<Arc<dyn CallObserver>>,
    shutdown: CancellationToken,
) {
    let ack_at = tokio::time::Instant::now() + config.ack_delay;
    let mut next: Option<Event> = None;
    let mut slot: Option<OwnedSemaphorePermit> = None;
    loop {
        let event = match next.take() {
            Some(event) => event,
            None => {
                if !io.conn().has_pending_input() {
                    // Between calls: a stream that has sent nothing of its next call holds no slot.
                    slot = None;
                    let input = tokio::select! {
                        // Between calls at shutdown: nothing is lost by closing now.
                        _ = shutdown.cancelled() => break,
                        input = io.wait_input_acking(ack_at) => input,
                    };
                    match input {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(err) => {
                            log_drive_error(&err);
                            break;
                        }
                    }
                }
                if slot.is_none() {
                    let started = std::time::Instant::now();
                    slot = wait_for_call_slot(&calls, io, ack_at).await;
                    if slot.is_none() {
                        // Closing, or the peer reset the stream while its call waited: free the stream now, not once
                        // a slot comes, so reset streams do not pile up against `max_streams` behind busy handlers.
                        if let Some(observer) = &observer {
                            let method = waiting_method(io, &router);
                            observer.call_finished(method, CallOutcome::Cancelled, started.elapsed());
                        }
                        break;
                    }
                }
                let event = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    event = io.next_event_acking(ack_at) => event,
                };
                match event {
                    Ok(Some(event)) => event,
                    Ok(None) => break,
                    Err(err) => {
                        log_drive_error(&err);
                        break;
                    }
                }
            }
        };
        let Event::Invoke { stream: id, method, .. } = event else {
            // Late packets of a finished call (the client's Close, say) need no answer.
            continue;
        };
        let Some(handler) = router.get(&method).cloned() else {
            tracing::debug!(%method, "unknown rpc");
            if let Some(observer) = &observer {
                // Not the peer's string: method names become metric labels, and those must stay a bounded set.
                observer.call_finished(UNKNOWN_METHOD, CallOutcome::Error(0), Duration::ZERO);
            }
            if io.conn().send_error(id, 0, &Status::unknown_rpc(&method).message).is_ok() && io.flush().await.is_err() {
                break;
            }
            continue;
        };
        let started = std::time::Instant::now();
        let span = tracing::debug_span!("rpc", method = %method);
        let outcome = match handler {
            Method::Unary(f) => serve_unary(io, id, ack_at, |body| f(ctx.clone(), body)).instrument(span).await,
            Method::Streaming(f) => {
                let queue = config.stream_send_queue.max(1);
                serve_streaming(io, id, method.clone(), queue, &shutdown, |stream| f(ctx.clone(), stream))
                    .instrument(span)
                    .await
            }
        };
        if let Some(observer) = &observer {
            let result = outcome.as_ref().map_or(CallOutcome::Cancelled, |(_, result)| *result);
            observer.call_finished(&method, result, started.elapsed());
        }
        match outcome {
            Ok((then, _)) => next = then,
            Err(err) => {
                log_drive_error(&err);
                break;
            }
        }
    }
    drop(slot);
}

/// The registered method a stream let go before its call started was going to call, for observers.
fn waiting_method<'r, C: Send + 'static>(io: &mut DrpcStream, router: &'r Router<C>) -> &'r str {
    match io.conn().poll_event() {
        Ok(Some(Event::Invoke { method, .. })) => router.path(&method).unwrap_or(UNKNOWN_METHOD),
        _ => UNKNOWN_METHOD,
    }
}

/// A slot for the stream's next call. A stream that waits for one is acknowledged at `ack_at`, as a slow reply
/// would be, so a Go peer does not tear the session down over a stream left un-ACKed. `None` when the semaphore is
/// closed or the acknowledgement cannot be written because the peer reset the stream; a reset that comes after the
/// acknowledgement is seen once the slot is granted, by the call itself.
async fn wait_for_call_slot(
    calls: &Arc<Semaphore>,
    io: &mut DrpcStream,
    ack_at: tokio::time::Instant,
) -> Option<OwnedSemaphorePermit> {
    let slot = calls.clone().acquire_owned();
    tokio::pin!(slot);
    if !io.is_acked() {
        tokio::select! {
            biased;
            permit = &mut slot => return permit.ok(),
            _ = tokio::time::sleep_until(ack_at) => {
                if let Err(err) = io.acknowledge().await {
                    tracing::debug!(error = %err, "stream gone while its call waited for a slot");
                    return None;
                }
            }
        }
    }
    slot.await.ok()
}

fn log_drive_error(err: &DriveError) {
    match err {
        DriveError::Protocol(err) => {
            tracing::info!(error = %err, "dRPC protocol error from peer; closing its stream")
        }
        DriveError::Io(err) => tracing::debug!(error = %err, "stream transport error"),
        DriveError::Memory(err) => tracing::debug!(error = %err, "stream ended by the memory budget"),
    }
}

fn panicked(_: Box<dyn std::any::Any + Send>) -> Status {
    tracing::error!("rpc handler panicked");
    Status::error("internal error: handler panicked")
}

/// What ends a call early, from the peer's side: Go maps each of these (and transport EOF) to cancellation.
fn ends_call(event: &Event, id: u64) -> bool {
    match event {
        Event::Close { stream }
        | Event::Cancel { stream }
        | Event::Error { stream, .. }
        | Event::Superseded { stream } => *stream == id,
        Event::Invoke { .. } => true,
        Event::Message { .. } | Event::CloseSend { .. } => false,
    }
}

/// Returns the event that ended the call early when it belongs to the next call (a newer Invoke).
fn carry_over(event: Event) -> Option<Event> {
    matches!(event, Event::Invoke { .. }).then_some(event)
}

async fn serve_unary(
    io: &mut DrpcStream,
    id: u64,
    ack_at: tokio::time::Instant,
    handler: impl FnOnce(Bytes) -> BoxFuture<Result<Bytes, Status>>,
) -> Result<(Option<Event>, CallOutcome), DriveError> {
    // drpcmux reads the request before it calls the handler.
    let request = loop {
        match io.next_event_acking(ack_at).await? {
            Some(Event::Message { stream, data }) if stream == id => break data,
            Some(Event::CloseSend { stream }) if stream == id => {
                // Go's MsgRecv returns io.EOF, and the handler's error goes back as is.
                let _ = io.conn().send_error(id, 0, "EOF");
                io.flush().await?;
                return Ok((None, CallOutcome::Error(0)));
            }
            Some(event) if ends_call(&event, id) => return Ok((carry_over(event), CallOutcome::Cancelled)),
            Some(_) => continue,
            None => return Ok((None, CallOutcome::Cancelled)),
        }
    };
    let call = AssertUnwindSafe(handler(request)).catch_unwind();
    tokio::pin!(call);
    let result = loop {
        let acked = io.is_acked();
        tokio::select! {
            biased;
            result = &mut call => break result.unwrap_or_else(|panic| Err(panicked(panic))),
            event = io.next_event() => match event? {
                Some(event) if ends_call(&event, id) => return Ok((carry_over(event), CallOutcome::Cancelled)),
                Some(_) => continue,
                // The client half-closed its transport: Go's server cancels the call, and so do we.
                None => return Ok((None, CallOutcome::Cancelled)),
            },
            _ = tokio::time::sleep_until(ack_at), if !acked => io.acknowledge().await?,
        }
    };
    let outcome = match &result {
        Ok(_) => CallOutcome::Ok,
        Err(status) => CallOutcome::Error(status.code),
    };
    let sent = match result {
        Ok(reply) => io.conn().send_message(id, &reply).and_then(|()| io.conn().send_close_send(id)),
        Err(status) => io.conn().send_error(id, status.code, &status.message),
    };
    if sent.is_ok() {
        io.flush().await?;
    }
    Ok((None, outcome))
}

async fn serve_streaming(
    io: &mut DrpcStream,
    id: u64,
    method: String,
    send_queue: usize,
    shutdown: &CancellationToken,
    handler: impl FnOnce(ServerStream) -> BoxFuture<Result<(), Status>>,
) -> Result<(Option<Event>, CallOutcome), DriveError> {
    // Streaming calls live long and may stay quiet: acknowledge now rather than arm a timer.
    io.acknowledge().await?;
    let (in_tx, in_rx) = mpsc::channel::<Bytes>(1);
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(send_queue);
    let call = AssertUnwindSafe(handler(ServerStream { inbound: in_rx, outbound: out_tx, method })).catch_unwind();
    tokio::pin!(call);
    let mut in_tx = Some(in_tx);
    // A message the handler has not taken yet; while it waits we read nothing more (Go's back-pressure).
    let mut undelivered: Option<Bytes> = None;
    // What the message last handed to the handler (or waiting for it) counts against the memory budget. It is given
    // back when the next message goes in, which the one-message channel allows only once the handler took this one:
    // a channel of bare bytes keeps each idle stream's channel block small.
    let mut _handed_on: Option<MemoryCharge> = None;
    let result = loop {
        tokio::select! {
            biased;
            result = &mut call => break result.unwrap_or_else(|panic| Err(panicked(panic))),
            // Streams live as long as the agent: at shutdown they end (the handler is dropped) instead of holding
            // the drain. Unary calls in flight are left to finish.
            _ = shutdown.cancelled() => return Ok((None, CallOutcome::Cancelled)),
            Some(reply) = out_rx.recv() => {
                if io.conn().send_message(id, &reply).is_err() {
                    return Ok((None, CallOutcome::Cancelled));
                }
                io.flush().await?;
            }
            permit = reserve(in_tx.clone()), if undelivered.is_some() => match (permit, undelivered.take()) {
                (Some(permit), Some(message)) => {
                    permit.send(message);
                }
                // The handler dropped its receiver: it no longer wants messages.
                _ => in_tx = None,
            },
            event = io.next_event(), if undelivered.is_none() => match event? {
                Some(Event::Message { stream, data }) if stream == id => {
                    // The previous message's charge goes once this one is counted: in the channel or waiting,
                    // there is never more than one.
                    _handed_on = io.charge(data.len());
                    if let Some(Err(mpsc::error::TrySendError::Full(data))) = in_tx.as_ref().map(|tx| tx.try_send(data)) {
                        undelivered = Some(data);
                    }
                }
                Some(Event::CloseSend { stream }) if stream == id => in_tx = None,
                Some(event) if ends_call(&event, id) => return Ok((carry_over(event), CallOutcome::Cancelled)),
                Some(_) => {}
                None => return Ok((None, CallOutcome::Cancelled)),
            },
        }
    };
    // Replies the handler queued before it returned still go out, before the end of the stream.
    while let Ok(reply) = out_rx.try_recv() {
        if io.conn().send_message(id, &reply).is_err() {
            return Ok((None, CallOutcome::Cancelled));
        }
    }
    let outcome = match &result {
        Ok(()) => CallOutcome::Ok,
        Err(status) => CallOutcome::Error(status.code),
    };
    let _ = match result {
        Ok(()) => io.conn().send_close_send(id),
        Err(status) => io.conn().send_error(id, status.code, &status.message),
    };
    io.flush().await?;
    Ok((None, outcome))
}

async fn reserve(tx: Option<mpsc::Sender<Bytes>>) -> Option<mpsc::OwnedPermit<Bytes>> {
    match tx {
        Some(tx) => tx.reserve_owned().await.ok(),
        None => None,
    }
}
