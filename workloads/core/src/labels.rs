//! Parser for DCGM's `labels_raw` column.
//!
//! The column contains the exporter's Prometheus labels as `key="value"` pairs separated by commas,
//! for example `DCGM_FI_DRIVER_VERSION="535.129.03",Hostname="host-1"`. The CSV layer has already
//! undone the doubled quotes by the time this parser runs. Inside a value, commas are plain text
//! and `\"`, `\\` and `\n` are escapes, as in the Prometheus text format.

use std::collections::BTreeMap;

/// Error from parsing a `labels_raw` field. Offsets are byte offsets from the start of the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelsError {
    #[error("label at offset {offset} has an empty name; write pairs as key=\"value\"")]
    EmptyKey { offset: usize },
    #[error("label `{key}` is not followed by =\"…\" at offset {offset}; write pairs as key=\"value\"")]
    MissingValue { key: String, offset: usize },
    #[error("value of label `{key}` has no closing quote; close it with \" and escape inner quotes as \\\"")]
    UnterminatedValue { key: String },
    #[error("unexpected {found:?} at offset {offset} after label `{key}`; separate pairs with a comma")]
    MissingSeparator { key: String, found: char, offset: usize },
    #[error("label `{key}` appears twice; each label name may appear once")]
    Duplicate { key: String },
}

/// Parses `key="value",key="value"` into a map. An empty field is an empty map.
pub fn parse_labels(raw: &str) -> Result<BTreeMap<String, String>, LabelsError> {
    let mut labels = BTreeMap::new();
    let mut chars = raw.char_indices().peekable();

    loop {
        // Pair start: skip blanks, stop at the end of the field.
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(key_start, _)) = chars.peek() else { break };

        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && *c != ',') {
            key.push(c);
        }
        let key = key.trim().to_owned();
        if key.is_empty() {
            return Err(LabelsError::EmptyKey { offset: key_start });
        }

        let offset = chars.peek().map_or(raw.len(), |(i, _)| *i);
        if chars.next_if(|(_, c)| *c == '=').is_none() || chars.next_if(|(_, c)| *c == '"').is_none() {
            return Err(LabelsError::MissingValue { key, offset });
        }
        let value = read_quoted(&mut chars).ok_or_else(|| LabelsError::UnterminatedValue { key: key.clone() })?;

        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        match chars.next() {
            None | Some((_, ',')) => {}
            Some((offset, found)) => return Err(LabelsError::MissingSeparator { key, found, offset }),
        }

        if labels.contains_key(&key) {
            return Err(LabelsError::Duplicate { key });
        }
        labels.insert(key, value);
    }

    Ok(labels)
}

/// Reads a value up to its unescaped closing quote, which it consumes. Returns `None` when the
/// field ends first.
fn read_quoted(chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>) -> Option<String> {
    let mut value = String::new();
    loop {
        match chars.next()?.1 {
            '"' => return Some(value),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                // `\"` and `\\` stand for the character itself; an unknown escape is kept as is.
                escaped @ ('"' | '\\') => value.push(escaped),
                other => {
                    value.push('\\');
                    value.push(other);
                }
            },
            c => value.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dcgm_labels_parsed() {
        let raw = r#"DCGM_FI_DRIVER_VERSION="535.129.03",Hostname="mtv5-dgx1-hgpu-031",gpu="0""#;
        let labels = parse_labels(raw).unwrap();
        assert_eq!(labels.len(), 3);
        assert_eq!(labels["DCGM_FI_DRIVER_VERSION"], "535.129.03");
        assert_eq!(labels["Hostname"], "mtv5-dgx1-hgpu-031");
        assert_eq!(labels["gpu"], "0");
    }

    #[test]
    fn empty_field_is_empty_map() {
        assert!(parse_labels("").unwrap().is_empty());
        assert!(parse_labels("  ").unwrap().is_empty());
    }

    #[test]
    fn comma_inside_value_kept() {
        let labels = parse_labels(r#"a="x,y",b="z""#).unwrap();
        assert_eq!(labels["a"], "x,y");
        assert_eq!(labels["b"], "z");
    }

    #[test]
    fn escaped_quote_and_backslash() {
        let labels = parse_labels(r#"a="say \"hi\"",b="c:\\dir",c="l1\nl2""#).unwrap();
        assert_eq!(labels["a"], r#"say "hi""#);
        assert_eq!(labels["b"], r"c:\dir");
        assert_eq!(labels["c"], "l1\nl2");
    }

    #[test]
    fn empty_value_allowed() {
        assert_eq!(parse_labels(r#"pod="""#).unwrap()["pod"], "");
    }

    #[test]
    fn trailing_comma_allowed() {
        assert_eq!(parse_labels(r#"a="1","#).unwrap().len(), 1);
    }

    #[test]
    fn unterminated_value_rejected() {
        assert_eq!(
            parse_labels(r#"a="1,b="2"#),
            Err(LabelsError::MissingSeparator { key: "a".into(), found: '2', offset: 8 })
        );
        assert_eq!(parse_labels(r#"a="open"#), Err(LabelsError::UnterminatedValue { key: "a".into() }));
    }

    #[test]
    fn missing_quotes_rejected() {
        assert_eq!(parse_labels("a=1"), Err(LabelsError::MissingValue { key: "a".into(), offset: 1 }));
        assert_eq!(parse_labels("novalue"), Err(LabelsError::MissingValue { key: "novalue".into(), offset: 7 }));
    }

    #[test]
    fn empty_key_rejected() {
        assert_eq!(parse_labels(r#"="v""#), Err(LabelsError::EmptyKey { offset: 0 }));
    }

    #[test]
    fn duplicate_key_rejected() {
        assert_eq!(parse_labels(r#"a="1",a="2""#), Err(LabelsError::Duplicate { key: "a".into() }));
    }
}
