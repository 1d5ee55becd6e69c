//! Markdown tables that the harness prints and can write to a file.

use std::fmt::Write as _;

/// One result table with its title and notes.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub title: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Lines printed under the table: what was measured and what the numbers exclude.
    pub notes: Vec<String>,
}

impl Table {
    pub fn new(title: &str, headers: &[&str]) -> Self {
        Table { title: title.to_owned(), headers: headers.iter().map(|h| (*h).to_owned()).collect(), ..Table::default() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    /// Renders the table as GitHub-flavoured Markdown.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "### {}\n", self.title);
        let _ = writeln!(out, "| {} |", self.headers.join(" | "));
        let _ = writeln!(out, "|{}", self.headers.iter().map(|_| "---|").collect::<String>());
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                let _ = writeln!(out, "- {note}");
            }
        }
        out
    }
}

/// Formats a rate with thousands separators and no decimals, for example `12,345`.
pub fn per_second(value: f64) -> String {
    group_thousands(value.round() as u64)
}

/// Formats microseconds as `µs` below 10 ms and `ms` above.
pub fn micros(value: f64) -> String {
    if value < 10_000.0 { format!("{value:.0} µs") } else { format!("{:.1} ms", value / 1_000.0) }
}

/// Formats KiB as MiB with one decimal.
pub fn mebibytes(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Formats a ratio such as 1.37×.
pub fn ratio(numerator: f64, denominator: f64) -> String {
    if denominator > 0.0 { format!("{:.2}×", numerator / denominator) } else { "n/a".into() }
}

pub fn group_thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_grouping() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1_000), "1,000");
        assert_eq!(group_thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn markdown_table_layout() {
        let mut table = Table::new("Example", &["a", "b"]);
        table.row(vec!["1".into(), "2".into()]);
        table.note("measured on loopback");
        let text = table.to_markdown();
        assert!(text.contains("| a | b |\n|---|---|\n| 1 | 2 |\n"), "{text}");
        assert!(text.contains("- measured on loopback"), "{text}");
    }

    #[test]
    fn latency_units() {
        assert_eq!(micros(850.4), "850 µs");
        assert_eq!(micros(12_345.0), "12.3 ms");
    }
}
