//! Opaque keyset cursors for `page_token`.
//!
//! A token is the base64url (no padding) encoding of a small JSON object: a format version,
//! the fingerprint of the query that issued it, and the sort key of the last entry returned.
//! The next page starts strictly after that key, so entries inserted between requests never
//! shift a page the way an offset would.
//!
//! Tokens are not signed. A client that edits one only changes where its own listing resumes,
//! which grants nothing its token did not already allow.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::app_error::AppError;

/// Query parameter that carries the token.
pub const PARAMETER: &str = "page_token";

/// Token format version; a token of another version is rejected as invalid.
const VERSION: u8 = 1;

/// Tokens longer than this are rejected before decoding. Real tokens are far shorter: the
/// largest key is a GPU hostname or a message id plus a timestamp.
const MAX_TOKEN_LEN: usize = 2048;

#[derive(serde::Serialize, serde::Deserialize)]
struct Envelope<K> {
    /// Format version.
    v: u8,
    /// Fingerprint of the filters and sort order, as lowercase hex.
    q: String,
    /// Sort key of the last entry of the previous page.
    k: K,
}

/// Stable 64-bit FNV-1a hash of the query's canonical parts.
///
/// Each part is length-prefixed, so ("ab", "c") and ("a", "bc") differ. The hash must stay the
/// same across builds and releases because tokens outlive a rolling update, which rules out
/// `std::hash::DefaultHasher`.
pub fn fingerprint(parts: &[&str]) -> String {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET_BASIS;
    for part in parts {
        let length = (part.len() as u64).to_le_bytes();
        for byte in length.iter().chain(part.as_bytes()) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    format!("{hash:016x}")
}

/// Encodes the key of the last entry of a page under the query's fingerprint.
pub fn encode<K: Serialize>(fingerprint: &str, key: &K) -> String {
    let envelope = Envelope {
        v: VERSION,
        q: fingerprint.to_owned(),
        k: key,
    };
    let json = serde_json::to_vec(&envelope).expect("a page key always encodes as JSON");
    URL_SAFE_NO_PAD.encode(json)
}

/// Decodes a token and checks that it was issued for a query with the same fingerprint.
pub fn decode<K: DeserializeOwned>(token: &str, fingerprint: &str) -> Result<K, AppError> {
    let invalid = || {
        AppError::invalid_parameter(
            PARAMETER,
            "page_token is not a token returned by this API; pass the next_page_token of the \
             previous response unchanged, or omit page_token to start from the first page",
        )
    };
    if token.len() > MAX_TOKEN_LEN {
        return Err(invalid());
    }
    let json = URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| invalid())?;
    let envelope: Envelope<K> = serde_json::from_slice(&json).map_err(|_| invalid())?;
    if envelope.v != VERSION {
        return Err(invalid());
    }
    if envelope.q != fingerprint {
        return Err(AppError::invalid_parameter(
            PARAMETER,
            "page_token was issued for a request with other filters or sort order; repeat the \
             parameters of the request that returned it (only limit may change), or omit \
             page_token to start over",
        ));
    }
    Ok(envelope.k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Key {
        t: i64,
        id: String,
    }

    #[test]
    fn round_trip() {
        let key = Key {
            t: 1_752_871_354_000,
            id: "message-1".into(),
        };
        let token = encode("00ff", &key);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{token}"
        );
        assert_eq!(decode::<Key>(&token, "00ff").unwrap(), key);
    }

    #[test]
    fn other_fingerprint_rejected() {
        let token = encode(
            "aaaa",
            &Key {
                t: 1,
                id: "x".into(),
            },
        );
        let err = decode::<Key>(&token, "bbbb").unwrap_err();
        assert_eq!(err.parameter(), Some(PARAMETER));
    }

    #[test]
    fn garbage_rejected() {
        for token in ["", "not base64!", "e30", &"A".repeat(MAX_TOKEN_LEN + 1)] {
            let err = decode::<Key>(token, "00ff").unwrap_err();
            assert_eq!(err.parameter(), Some(PARAMETER), "{token}");
        }
    }

    #[test]
    fn fingerprint_separates_parts() {
        assert_ne!(fingerprint(&["ab", "c"]), fingerprint(&["a", "bc"]));
        assert_eq!(
            fingerprint(&["telemetry", "GPU-1"]),
            fingerprint(&["telemetry", "GPU-1"])
        );
    }

    #[test]
    fn fingerprint_is_stable() {
        // FNV-1a test vector: the empty input hashes to the offset basis.
        assert_eq!(fingerprint(&[]), "cbf29ce484222325");
    }
}
