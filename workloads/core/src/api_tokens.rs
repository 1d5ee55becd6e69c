//! The API tokens file: one `name:token` per line, `#` comments and blank lines allowed.
//!
//! The REST API reads it and the operator writes it into a generated Secret, so both use the
//! functions here.

/// A valid line of the tokens file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenLine {
    /// Name that logs show in place of the token.
    pub name: String,
    /// The bearer token itself.
    pub token: String,
}

/// Formats one line of the tokens file, newline included.
pub fn format_line(name: &str, token: &str) -> String {
    format!("{name}:{token}\n")
}

/// Parses one non-blank, non-comment line. The error describes the problem without repeating
/// the token.
pub fn parse_line(line: &str) -> Result<TokenLine, String> {
    let Some((name, token)) = line.split_once(':') else {
        return Err("expected `name:token`, found no `:`".to_owned());
    };
    let (name, token) = (name.trim(), token.trim());
    if name.is_empty() {
        return Err("the name before `:` is empty".to_owned());
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("the name {name:?} contains white space or control characters"));
    }
    if token.is_empty() {
        return Err(format!("the token of `{name}` is empty"));
    }
    if !token.bytes().all(is_b64token_byte) {
        return Err(format!(
            "the token of `{name}` contains characters a Bearer header cannot carry; \
             use letters, digits and - . _ ~ + / ="
        ));
    }
    Ok(TokenLine { name: name.to_owned(), token: token.to_owned() })
}

/// Bytes allowed in a Bearer token (`b64token` of RFC 6750, section 2.1).
fn is_b64token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatted_line_parses_back() {
        let line = format_line("ops", "abc-123_~");
        let parsed = parse_line(line.trim_end()).unwrap();
        assert_eq!(parsed, TokenLine { name: "ops".into(), token: "abc-123_~".into() });
    }

    #[test]
    fn bare_token_rejected() {
        assert!(parse_line("abcdef").unwrap_err().contains("name:token"));
    }

    #[test]
    fn token_with_space_rejected() {
        assert!(parse_line("ops:ab cd").unwrap_err().contains("Bearer"));
    }

    #[test]
    fn empty_parts_rejected() {
        assert!(parse_line(":abc").is_err());
        assert!(parse_line("ops:").is_err());
        assert!(parse_line("my ops:abc").is_err());
    }
}
