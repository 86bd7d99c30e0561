//! `POST /api/v2/workspaceagents/{aws,azure,google}-instance-identity`: the logins of agents whose template sets
//! `auth = "aws-instance-identity"` (and the Azure and Google equivalents), which trade a signed document from the
//! cloud's metadata service for the agent's token. They are not agent-authenticated.
//!
//! coderd reads the body (400 for bad JSON or an empty required field), verifies the signature against the cloud's
//! certificates (401 "Invalid AWS identity." and the like when that fails), then looks the instance id up among
//! its agents (404 "Instance with id … not found." without one). agentwire's agents authenticate with their token
//! only: none has an instance id and no cloud certificates are configured, so after the same body checks it answers
//! coderd's 401 for an identity it cannot verify, and the agent keeps retrying as it does against a coderd that
//! rejects it.

use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;

use super::{read_json, required, MeState};
use crate::http::error::ApiError;

/// Why every identity is refused here.
pub const UNVERIFIABLE: &str =
    "this server verifies no cloud instance identities: its agents authenticate with their agent token";

/// `agentsdk.AWSInstanceIdentityToken`.
#[derive(Debug, Deserialize)]
pub struct AwsInstanceIdentityToken {
    #[serde(default)]
    pub signature: Option<String>,
    #[serde(default)]
    pub document: Option<String>,
}

/// `agentsdk.AzureInstanceIdentityToken`.
#[derive(Debug, Deserialize)]
pub struct AzureInstanceIdentityToken {
    #[serde(default)]
    pub signature: Option<String>,
    #[serde(default)]
    pub encoding: Option<String>,
}

/// `agentsdk.GoogleInstanceIdentityToken`.
#[derive(Debug, Deserialize)]
pub struct GoogleInstanceIdentityToken {
    #[serde(default)]
    pub json_web_token: Option<String>,
}

fn refuse(message: &str) -> Response {
    ApiError::new(StatusCode::UNAUTHORIZED, message).detail(UNVERIFIABLE).into_response()
}

pub async fn aws(State(state): State<MeState>, body: Result<Bytes, BytesRejection>) -> Response {
    let checked = read_json::<AwsInstanceIdentityToken>(body, state.config.limits.max_request_body).and_then(|t| {
        required(&[
            ("signature", t.signature.as_deref().unwrap_or_default()),
            ("document", t.document.as_deref().unwrap_or_default()),
        ])
    });
    match checked {
        Ok(()) => refuse("Invalid AWS identity."),
        Err(err) => err.into_response(),
    }
}

pub async fn azure(State(state): State<MeState>, body: Result<Bytes, BytesRejection>) -> Response {
    let checked = read_json::<AzureInstanceIdentityToken>(body, state.config.limits.max_request_body).and_then(|t| {
        required(&[
            ("signature", t.signature.as_deref().unwrap_or_default()),
            ("encoding", t.encoding.as_deref().unwrap_or_default()),
        ])
    });
    match checked {
        Ok(()) => refuse("Invalid Azure identity."),
        Err(err) => err.into_response(),
    }
}

pub async fn google(State(state): State<MeState>, body: Result<Bytes, BytesRejection>) -> Response {
    let checked = read_json::<GoogleInstanceIdentityToken>(body, state.config.limits.max_request_body)
        .and_then(|t| required(&[("json_web_token", t.json_web_token.as_deref().unwrap_or_default())]));
    match checked {
        Ok(()) => refuse("Invalid GCP identity."),
        Err(err) => err.into_response(),
    }
}
