//! `GET /api/v2/workspaceagents/me/external-auth` (and its legacy name `…/me/gitauth`): an access token for a Git
//! provider, which `coder gitaskpass` and `coder external-auth access-token` ask for.
//!
//! agentwire configures no external-auth providers, so it answers what a coderd without any answers: 400 without a
//! `match` (or legacy `url`) or `id` parameter, 400 with both, and otherwise 404 "No matching external auth provider
//! found in Coder for the url …". The manifest says the same (`git_auth_configs: 0`), so the agent does not set up
//! `GIT_ASKPASS` in the first place.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{go_quote, MeAgent, MeState};
use crate::http::error::ApiError;

/// The answer to a request with these query parameters (first value of each, as Go's `Query().Get`).
pub fn answer(query: &[(String, String)]) -> ApiError {
    let first = |name: &str| query.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str());
    let mut url = first("match");
    if url.is_empty() {
        url = first("url");
    }
    let id = first("id");
    if url.is_empty() && id.is_empty() {
        return ApiError::new(StatusCode::BAD_REQUEST, "'url' or 'id' must be provided!");
    }
    if !url.is_empty() && !id.is_empty() {
        return ApiError::new(StatusCode::BAD_REQUEST, "'url' and 'id' cannot be provided together!");
    }
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("No matching external auth provider found in Coder for the url {}.", go_quote(url)),
    )
    .detail("External auth provider not found.")
}

pub async fn external_auth(
    State(_state): State<MeState>,
    MeAgent(_agent): MeAgent,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let query = query.map(|q| q.0).unwrap_or_default();
    answer(&query).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn answers_as_a_coderd_without_providers() {
        let none = answer(&q(&[]));
        assert_eq!((none.status, none.message.as_str()), (StatusCode::BAD_REQUEST, "'url' or 'id' must be provided!"));
        let both = answer(&q(&[("match", "https://github.com/x"), ("id", "github")]));
        assert_eq!(both.message, "'url' and 'id' cannot be provided together!");
        let url = answer(&q(&[("url", "https://github.com/x"), ("listen", "")]));
        assert_eq!(url.status, StatusCode::NOT_FOUND);
        assert_eq!(
            url.message,
            r#"No matching external auth provider found in Coder for the url "https://github.com/x"."#
        );
        assert_eq!(url.detail, "External auth provider not found.");
        // An id alone matches nothing either; the url in the message is then empty.
        let id = answer(&q(&[("id", "github"), ("id", "other")]));
        assert_eq!(id.message, r#"No matching external auth provider found in Coder for the url ""."#);
        // The first value counts, as with Go's Query().Get; `match` before the legacy `url`.
        let first = answer(&q(&[("match", "a"), ("match", "b"), ("url", "c")]));
        assert!(first.message.ends_with(r#"url "a"."#), "{}", first.message);
    }
}
