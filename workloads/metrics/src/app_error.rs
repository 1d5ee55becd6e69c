//! The one error type that handlers return, and its JSON shape on the wire.
//!
//! Every failure is sent as `{"error": {"code", "message", "parameter"?}}`. Internal causes are
//! logged here and replaced by a generic message, so driver errors never reach a client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::Error;

/// A failed request: HTTP status, stable error code, message for the client, and (for 5xx)
/// the cause that is logged but not sent.
#[derive(Debug)]
pub struct AppError {
    status: StatusCode,
    /// Machine-readable code, stable across releases (`invalid_parameter`, `not_found`, …).
    code: &'static str,
    message: String,
    /// Query or path parameter that the request got wrong, for 400 responses.
    parameter: Option<String>,
    /// `WWW-Authenticate` challenge for 401 responses.
    challenge: Option<&'static str>,
    /// Internal cause, logged when the response is built.
    cause: Option<Box<Error>>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameter: Option<&'a str>,
}

impl AppError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        AppError {
            status,
            code,
            message: message.into(),
            parameter: None,
            challenge: None,
            cause: None,
        }
    }

    /// 400: `parameter` is invalid; `message` states what was given and which form is accepted.
    pub fn invalid_parameter(parameter: impl Into<String>, message: impl Into<String>) -> Self {
        AppError {
            parameter: Some(parameter.into()),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_parameter", message)
        }
    }

    /// 404 for a resource that does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 405 for a path that exists with other methods.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            message,
        )
    }

    /// 401 with a `WWW-Authenticate` challenge as RFC 6750 section 3 defines it.
    pub fn unauthorized(message: impl Into<String>, challenge: &'static str) -> Self {
        AppError {
            challenge: Some(challenge),
            ..Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
        }
    }

    /// 503 while MongoDB cannot be reached.
    pub fn unavailable(cause: Error) -> Self {
        AppError {
            cause: Some(Box::new(cause)),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the database is unavailable; retry later",
            )
        }
    }

    /// 500 for any other failure; the cause is logged, not sent.
    pub fn internal(cause: Error) -> Self {
        AppError {
            cause: Some(Box::new(cause)),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal server error; the cause is in the server log",
            )
        }
    }

    /// HTTP status of the response.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Parameter named in the response, if any.
    pub fn parameter(&self) -> Option<&str> {
        self.parameter.as_deref()
    }
}

impl From<Error> for AppError {
    fn from(err: Error) -> Self {
        if err.is_unavailable() {
            AppError::unavailable(err)
        } else {
            AppError::internal(err)
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if let Some(cause) = &self.cause {
            tracing::error!(status = self.status.as_u16(), code = self.code, cause = %cause, "request failed");
        }
        let body = Body {
            error: Detail {
                code: self.code,
                message: &self.message,
                parameter: self.parameter.as_deref(),
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(challenge) = self.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_json(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn invalid_parameter_names_parameter() {
        let response = AppError::invalid_parameter("limit", "too large").into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = body_json(response).await;
        assert_eq!(body["error"]["code"], "invalid_parameter");
        assert_eq!(body["error"]["parameter"], "limit");
        assert_eq!(body["error"]["message"], "too large");
    }

    #[tokio::test]
    async fn internal_cause_not_sent() {
        let cause = Error::Config("secret detail".to_owned());
        let response = AppError::internal(cause).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = body_json(response).await;
        assert!(!body.to_string().contains("secret detail"), "{body}");
        assert!(body["error"].get("parameter").is_none(), "{body}");
    }
}
