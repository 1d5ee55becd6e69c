//! Bearer-token authentication: the tokens file, the token check and the middleware.

use std::path::{Path, PathBuf};

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use crate::app_error::AppError;
use crate::{AppState, Error, Result};

/// Challenge for a request without credentials (RFC 6750 section 3: no error code then).
const CHALLENGE_MISSING: &str = "Bearer";
/// Challenge for a request whose token is not accepted.
const CHALLENGE_INVALID: &str = "Bearer error=\"invalid_token\"";

/// Authentication mode of the API.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Every request is accepted; only for explicit `--auth-disabled`.
    Disabled,
    /// Requests must carry one of these tokens.
    Tokens(TokenSet),
}

/// The API tokens, each with the name that logs show in its place.
#[derive(Clone)]
pub struct TokenSet {
    entries: Vec<TokenEntry>,
}

#[derive(Clone)]
struct TokenEntry {
    name: String,
    token: Vec<u8>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: the tokens themselves must not reach a log through `{:?}`.
        let names: Vec<&str> = self
            .entries
            .iter()
            .map(|entry| entry.name.as_str())
            .collect();
        f.debug_struct("TokenSet").field("names", &names).finish()
    }
}

impl TokenSet {
    /// Reads a tokens file: one `name:token` per line, blank lines and `#` comment lines allowed.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::TokensRead {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses the text of a tokens file; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut entries: Vec<(usize, TokenEntry)> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let entry = parse_line(trimmed).map_err(|reason| tokens_line(path, line, reason))?;
            if let Some((first, _)) = entries.iter().find(|(_, seen)| seen.name == entry.name) {
                return Err(tokens_line(
                    path,
                    line,
                    format!("name `{}` is already used on line {first}", entry.name),
                ));
            }
            if let Some((first, _)) = entries.iter().find(|(_, seen)| seen.token == entry.token) {
                return Err(tokens_line(
                    path,
                    line,
                    format!(
                        "the token is the same as on line {first}; give every client its own token"
                    ),
                ));
            }
            entries.push((line, entry));
        }
        if entries.is_empty() {
            return Err(Error::TokensEmpty {
                path: path.to_owned(),
            });
        }
        Ok(TokenSet {
            entries: entries.into_iter().map(|(_, entry)| entry).collect(),
        })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false: a tokens file without tokens is rejected by [`TokenSet::parse`].
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Returns the name of the token equal to `presented`, comparing in constant time.
    ///
    /// Every stored token is compared, so the time taken does not reveal which one matched or
    /// how long a matching prefix was. It can reveal the tokens' lengths.
    pub fn find(&self, presented: &[u8]) -> Option<&str> {
        let mut found = None;
        for entry in &self.entries {
            if constant_time_eq(&entry.token, presented) && found.is_none() {
                found = Some(entry.name.as_str());
            }
        }
        found
    }
}

fn tokens_line(path: &Path, line: usize, reason: String) -> Error {
    Error::TokensLine {
        path: PathBuf::from(path),
        line,
        reason,
    }
}

/// Splits one non-comment line into name and token. Error texts never contain the token.
fn parse_line(line: &str) -> Result<TokenEntry, String> {
    let parsed = telemetry_core::api_tokens::parse_line(line)?;
    Ok(TokenEntry {
        name: parsed.name,
        token: parsed.token.into_bytes(),
    })
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(expected: &[u8], presented: &[u8]) -> bool {
    let mut difference = expected.len() ^ presented.len();
    for index in 0..expected.len().max(presented.len()) {
        let a = expected.get(index).copied().unwrap_or(0);
        let b = presented.get(index).copied().unwrap_or(0);
        difference |= usize::from(a ^ b);
    }
    // black_box keeps the optimiser from turning the loop into an early-exit comparison.
    std::hint::black_box(difference) == 0
}

/// Extracts the credential of an `Authorization: Bearer <token>` header.
/// The scheme name is case-insensitive (RFC 7235 section 2.1).
fn bearer_token(request: &Request) -> Result<&[u8], AppError> {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return Err(AppError::unauthorized(
            "missing Authorization header; send `Authorization: Bearer <token>`",
            CHALLENGE_MISSING,
        ));
    };
    let bytes = value.as_bytes();
    let scheme_ok = bytes.len() > 7 && bytes[..7].eq_ignore_ascii_case(b"bearer ");
    if !scheme_ok {
        return Err(AppError::unauthorized(
            "the Authorization header is not a Bearer credential; send `Authorization: Bearer <token>`",
            CHALLENGE_INVALID,
        ));
    }
    Ok(bytes[7..].trim_ascii())
}

/// Middleware that rejects requests without a valid token with 401, and records the token's
/// name (never the token) as the `caller` field of the request span.
pub async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let tokens = match state.auth() {
        Auth::Disabled => {
            tracing::Span::current().record("caller", "anonymous");
            return next.run(request).await;
        }
        Auth::Tokens(tokens) => tokens,
    };
    let presented = match bearer_token(&request) {
        Ok(presented) => presented,
        Err(err) => return axum::response::IntoResponse::into_response(err),
    };
    match tokens.find(presented) {
        Some(name) => {
            tracing::Span::current().record("caller", name);
            next.run(request).await
        }
        None => {
            tracing::debug!("rejected request with an unknown bearer token");
            let err = AppError::unauthorized("the bearer token is not valid", CHALLENGE_INVALID);
            axum::response::IntoResponse::into_response(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TokenSet> {
        TokenSet::parse(text, Path::new("tokens.txt"))
    }

    #[test]
    fn comments_and_blank_lines_skipped() {
        let tokens =
            parse("# clients\n\ngrafana:abc123\n  # indented comment\nops : def-456 \n").unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens.find(b"abc123"), Some("grafana"));
        assert_eq!(tokens.find(b"def-456"), Some("ops"));
        assert_eq!(tokens.find(b"abc12"), None);
        assert_eq!(tokens.find(b"abc1234"), None);
    }

    #[test]
    fn line_without_colon_names_line() {
        let err = parse("# header\ngrafana:abc\nsecret-without-name\n").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::TokensLine { line: 3, .. }), "{text}");
        assert!(text.contains("line 3"), "{text}");
        assert!(
            !text.contains("secret-without-name"),
            "token leaked: {text}"
        );
    }

    #[test]
    fn empty_token_rejected() {
        let err = parse("grafana:\n").unwrap_err();
        assert!(matches!(err, Error::TokensLine { line: 1, .. }), "{err}");
    }

    #[test]
    fn token_with_space_rejected() {
        let err = parse("grafana:abc def\n").unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
        assert!(!err.contains("abc def"), "token leaked: {err}");
    }

    #[test]
    fn duplicate_name_rejected() {
        let err = parse("a:one\na:two\n").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn duplicate_token_rejected() {
        let err = parse("a:tok3n\nb:tok3n\n").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(!err.contains("tok3n"), "token leaked: {err}");
    }

    #[test]
    fn file_without_tokens_rejected() {
        assert!(matches!(
            parse("# nothing\n\n"),
            Err(Error::TokensEmpty { .. })
        ));
    }

    #[test]
    fn debug_hides_tokens() {
        let tokens = parse("grafana:hunter2\n").unwrap();
        let debug = format!("{tokens:?}");
        assert!(
            debug.contains("grafana") && !debug.contains("hunter2"),
            "{debug}"
        );
    }

    #[test]
    fn constant_time_eq_compares_lengths() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abc\0"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
