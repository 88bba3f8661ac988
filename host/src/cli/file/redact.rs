//! What a refusal may show of the config file: the values of keys named
//! like secrets (`password`, `token`, `api-key`, …, and `password-env` /
//! `password-file` too, in case a password was pasted there) and the
//! passwords of URLs are masked as `***` wherever an error quotes the file,
//! in the line it shows and in its message, because errors reach stderr and
//! logs.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Shown instead of a secret.
const MASK: &str = "***";
/// Shorter secret values are not scrubbed from messages (they would
/// garble every word they occur in); their place in the file is still masked.
const MIN_SCRUBBED: usize = 3;

/// Parts of a key's name that make its value a secret (compared with the
/// name lowercased, without `-` and `_`).
const SECRET_NAMES: [&str; 10] = [
    "pass",
    "pwd",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "privatekey",
    "credential",
    "auth",
    "cookie",
];

/// Whether a key's value is never shown.
pub(super) fn is_secret_key(key: &str) -> bool {
    let name: String = key
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    SECRET_NAMES.iter().any(|s| name.contains(s))
}

/// The secrets of one config file's text.
#[derive(Debug, Default)]
pub(super) struct Secrets {
    /// Byte ranges of the text that are never shown.
    ranges: Vec<Range<usize>>,
    /// Secret values (as written and as expanded) never shown in a message.
    words: Vec<String>,
}

impl Secrets {
    /// The passwords of URLs written in `text`.
    pub(super) fn of_urls(text: &str) -> Self {
        let mut secrets = Self::default();
        for range in url_passwords(text) {
            secrets.words.push(text[range.clone()].to_owned());
            secrets.ranges.push(range);
        }
        secrets
    }

    /// Values of secret-named keys in a parsed file (exact spans), and the
    /// passwords of URLs among its strings (after `${VAR}` expansion too).
    pub(super) fn add_tree(&mut self, table: &DeTable<'_>) {
        for (key, value) in table.iter() {
            if is_secret_key(key.get_ref()) {
                self.ranges.push(value.span());
                self.add_words(value);
            } else {
                self.add_url_words(value);
            }
        }
    }

    fn add_words(&mut self, value: &Spanned<DeValue<'_>>) {
        match value.get_ref() {
            DeValue::String(s) => self.words.push(s.to_string()),
            DeValue::Integer(i) => self.words.push(i.as_str().to_owned()),
            DeValue::Float(f) => self.words.push(f.as_str().to_owned()),
            DeValue::Array(items) => items.iter().for_each(|v| self.add_words(v)),
            DeValue::Table(t) => t.iter().for_each(|(_, v)| self.add_words(v)),
            DeValue::Boolean(_) | DeValue::Datetime(_) => {}
        }
    }

    fn add_url_words(&mut self, value: &Spanned<DeValue<'_>>) {
        match value.get_ref() {
            DeValue::String(s) => {
                for range in url_passwords(s) {
                    self.words.push(s[range].to_owned());
                }
            }
            DeValue::Array(items) => items.iter().for_each(|v| self.add_url_words(v)),
            DeValue::Table(t) => self.add_tree(t),
            _ => {}
        }
    }

    /// For a file that does not parse: the rest of every line after a
    /// secret-named key's `=` (to the closing delimiter of a multi-line
    /// string or array).
    pub(super) fn add_lines(&mut self, text: &str) {
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            let body = line.trim_end_matches(['\n', '\r']);
            for (eq, _) in body.match_indices('=') {
                if is_secret_key(key_before(&body[..eq])) {
                    let start = offset + eq + 1;
                    let end = value_end(text, start, offset + body.len());
                    self.words.push(text[start..end].trim().to_owned());
                    self.ranges.push(start..end);
                    break;
                }
            }
            offset += line.len();
        }
    }

    /// `message` with every known secret and URL password replaced.
    pub(super) fn scrub(&self, message: &str) -> String {
        let mut words: Vec<&str> = self
            .words
            .iter()
            .map(|w| w.trim_matches(|c: char| matches!(c, '"' | '\'') || c.is_whitespace()))
            .filter(|w| w.chars().count() >= MIN_SCRUBBED)
            .collect();
        // The longest first, so a secret containing another goes whole.
        words.sort_by_key(|w| std::cmp::Reverse(w.len()));
        let mut out = message.to_owned();
        for w in words {
            out = out.replace(w, MASK);
        }
        mask(&out, &url_passwords(&out)).0
    }

    /// The line `line` of the text with secrets masked, and where the
    /// characters `caret` of the text fall in it (start column, 0-based,
    /// and width, at least 1).
    pub(super) fn line(&self, text: &str, line: Range<usize>, caret: Range<usize>) -> Shown {
        let within: Vec<Range<usize>> = self
            .ranges
            .iter()
            .filter(|r| r.start < line.end && r.end > line.start)
            .map(|r| r.start.max(line.start) - line.start..r.end.min(line.end) - line.start)
            .collect();
        let (shown, at) = mask(&text[line.clone()], &within);
        let start = at(caret.start - line.start, false);
        let end = at(caret.end.clamp(caret.start, line.end) - line.start, true);
        Shown {
            text: shown,
            column: start,
            width: end.saturating_sub(start).max(1),
        }
    }
}

/// A line as shown in an error.
pub(super) struct Shown {
    /// The line, secrets masked.
    pub text: String,
    /// Where the problem starts in it (characters, 0-based).
    pub column: usize,
    /// How many characters it spans there.
    pub width: usize,
}

/// `s` with each of `ranges` (byte ranges, possibly overlapping) replaced by
/// [`MASK`], and a map from a byte offset of `s` to a character column of
/// the result (for an offset inside a mask: its first column, or past its
/// last when `end`).
fn mask(s: &str, ranges: &[Range<usize>]) -> (String, impl Fn(usize, bool) -> usize + use<>) {
    let mut sorted: Vec<Range<usize>> = ranges.to_vec();
    sorted.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<usize>> = Vec::new();
    for r in sorted {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    let mut out = String::with_capacity(s.len());
    // (byte offset in `s`, column in `out`) at each boundary, to map offsets.
    let mut marks = vec![(0, 0)];
    let mut at = 0;
    for r in &merged {
        out.push_str(&s[at..r.start]);
        let column = out.chars().count();
        marks.push((r.start, column));
        out.push_str(MASK);
        at = r.end;
        marks.push((r.end, column + MASK.len()));
    }
    out.push_str(&s[at..]);
    let chars: Vec<usize> = s.char_indices().map(|(i, _)| i).collect();
    let column_of = move |offset: usize, end: bool| -> usize {
        // The last boundary at or before `offset`: odd ones start a mask.
        let i = marks.partition_point(|(o, _)| *o <= offset) - 1;
        let (o, column) = marks[i];
        if i % 2 == 1 {
            column + if end { MASK.len() } else { 0 }
        } else {
            column + chars.iter().filter(|c| **c >= o && **c < offset).count()
        }
    };
    (out, column_of)
}

/// The byte ranges of the passwords in every `scheme://user:password@host`
/// of `s` (what `redact_url` hides).
fn url_passwords(s: &str) -> Vec<Range<usize>> {
    let mut found = Vec::new();
    for (scheme_end, _) in s.match_indices("://") {
        let start = scheme_end + 3;
        let len = s[start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\''))
            .unwrap_or(s.len() - start);
        let url = &s[start..start + len];
        let Some(at) = url.rfind('@') else { continue };
        if let Some(colon) = url[..at].find(':') {
            found.push(start + colon + 1..start + at);
        }
    }
    found
}

/// The key written before an `=` (quotes and dotted prefixes dropped).
fn key_before(s: &str) -> &str {
    let s = s.trim_end();
    let start = s
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '"' | '\'')))
        .map_or(0, |i| i + 1);
    s[start..].trim_matches(['"', '\''])
}

/// Where a value starting at `start` ends: the end of its line, or the
/// closing delimiter of a multi-line string or bracket.
fn value_end(text: &str, start: usize, line_end: usize) -> usize {
    let rest = &text[start..];
    let lead = rest.len() - rest.trim_start().len();
    let value = &rest[lead..];
    let close = |delim: &str, from: usize| {
        value[from..]
            .find(delim)
            .map_or(text.len(), |i| start + lead + from + i + delim.len())
    };
    let end = if value.starts_with("\"\"\"") {
        close("\"\"\"", 3)
    } else if value.starts_with("'''") {
        close("'''", 3)
    } else if value.starts_with(['[', '{']) {
        let mut depth = 0i32;
        value
            .char_indices()
            .find_map(|(i, c)| {
                depth += match c {
                    '[' | '{' => 1,
                    ']' | '}' => -1,
                    _ => 0,
                };
                (depth == 0).then_some(start + lead + i + 1)
            })
            .unwrap_or(text.len())
    } else {
        line_end
    };
    end.max(line_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_named_like_secrets() {
        for secret in [
            "password",
            "password-env",
            "redis_passwd",
            "api-key",
            "API_TOKEN",
            "client-secret",
            "auth",
            "private-key",
        ] {
            assert!(is_secret_key(secret), "{secret}");
        }
        for plain in [
            "url",
            "username",
            "stream",
            "key",
            "max-deliveries",
            "listen",
        ] {
            assert!(!is_secret_key(plain), "{plain}");
        }
    }

    #[test]
    fn a_masked_line_keeps_the_caret_on_what_is_wrong() {
        let text = "url = \"redis://u:hunter2@db\" x\n";
        let secrets = Secrets::of_urls(text);
        let x = text.find(" x").unwrap() + 1;
        let shown = secrets.line(text, 0..text.len() - 1, x..x + 1);
        assert_eq!(shown.text, "url = \"redis://u:***@db\" x");
        assert_eq!(&shown.text[shown.column..shown.column + 1], "x");
        // A caret inside the secret points at the mask.
        let inside = text.find("hunter2").unwrap() + 2;
        let shown = secrets.line(text, 0..text.len() - 1, inside..inside + 3);
        assert_eq!((shown.column, shown.width), (17, 3));
    }

    #[test]
    fn an_unparsable_multi_line_secret_is_masked_to_its_end() {
        let text = "token = \"\"\"\nhunter2\n\"\"\"\nx = = 1\n";
        let mut secrets = Secrets::default();
        secrets.add_lines(text);
        let second = text.find("hunter2").unwrap();
        let shown = secrets.line(text, second..second + 7, second..second + 1);
        assert_eq!(shown.text, "***");
        assert_eq!(secrets.scrub("bad: hunter2"), "bad: ***");
    }
}
