//! The one place where handler failures become dRPC errors.
//!
//! Coder's handlers return plain Go errors, which drpc sends with code 0 and the error's text; agents match on
//! nothing but success or failure, and people read the text. So validation errors carry Coder's wording, and
//! database failures are logged in full but answered with a short text that leaks nothing.

use agentwire_store::StoreError;
use agentwire_transport::server::Status;

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The request breaks a rule; the text says which, in Coder's words where Coder has some.
    #[error("{0}")]
    Invalid(String),
    /// The RPC exists but this server does not serve it (drpc's code 12).
    #[error("Unimplemented")]
    Unimplemented,
    #[error("{what}: {source}")]
    Store {
        what: &'static str,
        #[source]
        source: StoreError,
    },
}

impl RpcError {
    pub fn invalid(text: impl Into<String>) -> Self {
        RpcError::Invalid(text.into())
    }

    /// Wraps a store failure with what the handler was doing. A value the store refused reaches the agent as the
    /// validation error it is, not as an internal database error.
    pub fn store(what: &'static str) -> impl FnOnce(StoreError) -> RpcError {
        move |source| match source {
            StoreError::Invalid(text) => RpcError::Invalid(text),
            // On a Coder database, what the deployment's coderd version has no table for is a method that coderd
            // does not implement: answered as coderd's dRPC server answers an unknown method.
            StoreError::NotInCoderSchema(_) => RpcError::Unimplemented,
            source => RpcError::Store { what, source },
        }
    }
}

impl From<RpcError> for Status {
    fn from(err: RpcError) -> Status {
        match err {
            RpcError::Invalid(text) => Status::error(text),
            RpcError::Unimplemented => Status::unimplemented(),
            RpcError::Store { what, source } => {
                tracing::error!(error = %source, "{what}");
                Status::error(format!("{what}: internal database error"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_the_store_refused_is_a_validation_error_and_a_database_failure_is_not_shown() {
        let refused = Status::from(RpcError::store("update lifecycle")(StoreError::Invalid("agent is deleted".into())));
        assert_eq!((refused.code, refused.message.as_str()), (0, "agent is deleted"));
        let failed = Status::from(RpcError::store("update lifecycle")(StoreError::Closed));
        assert_eq!(failed.message, "update lifecycle: internal database error");
        let absent = Status::from(RpcError::store("push context")(StoreError::NotInCoderSchema("context state")));
        assert_eq!(absent.code, Status::unimplemented().code);
    }
}
