//! The dRPC server: method routing and the loop that serves each yamux stream.

pub mod router;
pub mod serve;
pub mod status;
pub mod stream;

pub use router::{BoxFuture, Method, Router};
pub use serve::{
    CallObserver, CallOutcome, Server, ServerConfig, SessionEnd, DEFAULT_ACK_DELAY,
    DEFAULT_MAX_CONCURRENT_CALLS_PER_SESSION, DEFAULT_STREAM_SEND_QUEUE, UNKNOWN_METHOD,
};
pub use status::Status;
pub use stream::ServerStream;
pub mod typed;
pub use typed::{RequestStream, ResponseSink};
