//! The error a handler answers with: a dRPC error code and a text, sent as one Error packet.

use crate::wire::CODE_UNIMPLEMENTED;

/// A dRPC error as the peer sees it. Go's drpc has no code table: code 0 is "no code", 12 is `Unimplemented`,
/// anything else is the application's. Coder's handlers answer plain errors, so most statuses carry code 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (drpc code {code})")]
pub struct Status {
    pub code: u64,
    pub message: String,
}

impl Status {
    pub fn new(code: u64, message: impl Into<String>) -> Status {
        Status { code, message: message.into() }
    }

    /// A plain error without a code, as Coder's handlers return them.
    pub fn error(message: impl Into<String>) -> Status {
        Status::new(0, message)
    }

    /// What generated `DRPC*UnimplementedServer` stubs answer: code 12, text `Unimplemented`.
    pub fn unimplemented() -> Status {
        Status::new(CODE_UNIMPLEMENTED, "Unimplemented")
    }

    /// drpcmux's answer to a method it does not know, word for word.
    pub fn unknown_rpc(method: &str) -> Status {
        Status::new(0, format!("protocol error: unknown rpc: {method:?}"))
    }

    /// A request body that is not a valid protobuf message of the expected type.
    pub fn decode_failed(type_name: &str, err: impl std::fmt::Display) -> Status {
        Status::error(format!("failed to decode {type_name}: {err}"))
    }
}
