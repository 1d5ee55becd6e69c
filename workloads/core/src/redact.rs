//! Hiding passwords in URLs before they reach logs and errors.

/// Returns `url` with the password of its user info replaced by `***`. Works for AMQP URLs and
/// MongoDB connection strings (including `mongodb+srv://` and several hosts).
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find(['/', '?'])
        .map_or(url.len(), |offset| authority_start + offset);
    let authority = &url[authority_start..authority_end];

    // The last `@` ends the user info, because a password may contain an encoded `@`.
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let Some(colon) = authority[..at].find(':') else {
        return url.to_owned();
    };
    format!(
        "{}{}:***{}",
        &url[..authority_start],
        &authority[..colon],
        &url[authority_start + at..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hidden() {
        assert_eq!(
            redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            redact_url("mongodb://app:s3cr%40t@db-0:27017,db-1:27017/?replicaSet=rs0"),
            "mongodb://app:***@db-0:27017,db-1:27017/?replicaSet=rs0"
        );
        assert_eq!(redact_url("amqps://user:p%40ss@broker:5671"), "amqps://user:***@broker:5671");
    }

    #[test]
    fn url_without_password_unchanged() {
        for url in [
            "mongodb://127.0.0.1:27017",
            "amqp://user@host/%2f",
            "mongodb://h/?authSource=a@b",
            "not a url",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }
}
