//! `ConfigError`: every configuration error names where it comes from (file and line, or the
//! command line) and the key, so a user never has to guess which line of hmq.config is wrong.
//! Also turns serde's messages into ones written for the person editing the file.

use std::fmt;

/// A configuration error. Names the origin (file name, or "command line"), the line and column
/// where known, and the key as a dotted path (e.g. `tlsInfo.certFile`), or the flag.
///
/// Displays as `hmq.config:12:5: tlsInfo.certFile: expected a string`; unknown parts are left out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Where the configuration came from: the file name, or "command line". Empty if unknown.
    pub origin: String,
    /// 1-based line in the file, where known.
    pub line: Option<usize>,
    /// 1-based column in the line, where known.
    pub column: Option<usize>,
    /// The key as a dotted path (`tlsInfo.certFile`), or the flag (`--port`).
    pub key: Option<String>,
    /// What is wrong, and what is expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut place = self.origin.clone();
        if let Some(line) = self.line {
            place = format!("{place}:{line}");
            if let Some(column) = self.column {
                place = format!("{place}:{column}");
            }
        }
        if !place.is_empty() {
            write!(f, "{place}: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl ConfigError {
    /// An error about `key` (a dotted path), with no origin or position yet.
    pub fn for_key(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            origin: String::new(),
            line: None,
            column: None,
            key: Some(key.into()),
            message: message.into(),
        }
    }

    /// An error about the whole input from `origin`, not tied to a key.
    pub fn in_origin(origin: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            origin: origin.into(),
            line: None,
            column: None,
            key: None,
            message: message.into(),
        }
    }

    /// Sets the origin, and finds the line and column of the key in `text` (the JSON the
    /// config was parsed from) when they are not known yet.
    pub fn located_in(mut self, text: &str, origin: &str) -> Self {
        self.origin = origin.to_owned();
        if self.line.is_none() {
            if let Some((line, column)) = self.key.as_deref().and_then(|k| locate_key(text, k)) {
                self.line = Some(line);
                self.column = Some(column);
            }
        }
        self
    }

    /// Converts a serde_json error, with the path serde_path_to_error tracked, into an error
    /// naming the key.
    pub(crate) fn from_serde(
        err: serde_path_to_error::Error<serde_json::Error>,
        origin: &str,
    ) -> Self {
        let key = dotted_path(err.path());
        Self::from_json_error(err.inner(), key, origin)
    }

    /// Converts a serde_json error (syntax errors have no key).
    pub(crate) fn from_json_error(
        err: &serde_json::Error,
        key: Option<String>,
        origin: &str,
    ) -> Self {
        let (line, column) = match (err.line(), err.column()) {
            (0, _) => (None, None),
            (line, 0) => (Some(line), None),
            (line, column) => (Some(line), Some(column)),
        };
        let full = err.to_string();
        let bare = full
            .strip_suffix(&format!(" at line {} column {}", err.line(), err.column()))
            .unwrap_or(&full);
        let (key, message) = describe(bare, key);
        ConfigError {
            origin: origin.to_owned(),
            line,
            column,
            key,
            message,
        }
    }
}

/// `tlsInfo.certFile` from serde_path_to_error's path; `None` for the root.
fn dotted_path(path: &serde_path_to_error::Path) -> Option<String> {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Enum { variant } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(variant);
            }
            Segment::Unknown => {}
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Rewrites serde's message for a person editing the file. Returns the key (possibly completed
/// with the field serde names) and the message.
fn describe(message: &str, key: Option<String>) -> (Option<String>, String) {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        // "unknown field `wsPrt`, expected one of `workerNum`, `host`, ..."
        let names: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
        let Some((unknown, known)) = names.split_first() else {
            return (key, message.to_owned());
        };
        let key = Some(key.unwrap_or_else(|| (*unknown).to_owned()));
        let text = match suggest(unknown, known) {
            Some(near) => format!("unknown key (did you mean `{near}`?)"),
            None => "unknown key".to_owned(),
        };
        return (key, text);
    }
    if let Some(rest) = message.strip_prefix("duplicate field `") {
        let name = rest.trim_end_matches('`');
        // serde reports it from the object, so the path names the parent.
        let key = match key {
            Some(parent) => format!("{parent}.{name}"),
            None => name.to_owned(),
        };
        return (Some(key), "the key appears twice".to_owned());
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            if let Some((found, expected)) = rest.split_once(", expected ") {
                return (
                    key,
                    format!("expected {}, found {found}", plain_type(expected)),
                );
            }
        }
    }
    (key, message.to_owned())
}

/// Serde names Rust types ("expected u16"); say what they mean.
fn plain_type(expected: &str) -> String {
    match expected {
        "u8" => "an integer between 0 and 255".to_owned(),
        "u16" => "an integer between 0 and 65535".to_owned(),
        "u32" => "an integer between 0 and 4294967295".to_owned(),
        "u64" | "usize" => "a non-negative integer".to_owned(),
        "path string" => "a string (a file path)".to_owned(),
        "option" => "a value or null".to_owned(),
        other => other.to_owned(),
    }
}

/// The known name closest to a mistyped one: same letters in another case, or at most two edits.
fn suggest<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    if let Some(same) = known.iter().find(|k| k.eq_ignore_ascii_case(unknown)) {
        return Some(same);
    }
    known
        .iter()
        .map(|k| {
            (
                edit_distance(&unknown.to_ascii_lowercase(), &k.to_ascii_lowercase()),
                *k,
            )
        })
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k)
}

/// Levenshtein distance, for suggestions on short key names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// Finds where the key `path` (dotted, e.g. `tlsInfo.certFile`) is written in the JSON `text`:
/// 1-based line and column of its opening quote. Follows the nesting, so `cluster.port` is not
/// confused with the top-level `port`. Used for errors found after parsing, which serde cannot
/// place. Returns `None` if the key is not in the text (it took its default).
pub(crate) fn locate_key(text: &str, path: &str) -> Option<(usize, usize)> {
    let target: Vec<&str> = path.split('.').collect();
    // One frame per open container: for objects, the key whose value is being read, and
    // whether the next string is a key.
    enum Frame {
        Object {
            key: Option<String>,
            expect_key: bool,
        },
        Array,
    }
    let mut stack: Vec<Frame> = Vec::new();
    let (mut line, mut column) = (1, 0);
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        column += 1;
        match c {
            '\n' => {
                line += 1;
                column = 0;
            }
            '{' => stack.push(Frame::Object {
                key: None,
                expect_key: true,
            }),
            '[' => stack.push(Frame::Array),
            '}' | ']' => {
                stack.pop();
            }
            ',' => {
                if let Some(Frame::Object { expect_key, .. }) = stack.last_mut() {
                    *expect_key = true;
                }
            }
            ':' => {
                if let Some(Frame::Object { expect_key, .. }) = stack.last_mut() {
                    *expect_key = false;
                }
            }
            '"' => {
                let (start_line, start_column) = (line, column);
                let mut string = String::new();
                while let Some(c) = chars.next() {
                    column += 1;
                    match c {
                        '"' => break,
                        '\\' => {
                            // Escapes are copied raw: config keys never need them.
                            if let Some(escaped) = chars.next() {
                                column += 1;
                                string.push(escaped);
                            }
                        }
                        '\n' => {
                            line += 1;
                            column = 0;
                        }
                        other => string.push(other),
                    }
                }
                if let Some(Frame::Object {
                    key,
                    expect_key: true,
                }) = stack.last_mut()
                {
                    *key = Some(string);
                    let current: Option<Vec<&str>> = stack
                        .iter()
                        .map(|frame| match frame {
                            Frame::Object { key: Some(k), .. } => Some(k.as_str()),
                            _ => None,
                        })
                        .collect();
                    if current.as_deref() == Some(target.as_slice()) {
                        return Some((start_line, start_column));
                    }
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_leaves_out_unknown_parts() {
        let full = ConfigError {
            origin: "hmq.config".into(),
            line: Some(12),
            column: Some(5),
            key: Some("tlsInfo.certFile".into()),
            message: "expected a string".into(),
        };
        assert_eq!(
            full.to_string(),
            "hmq.config:12:5: tlsInfo.certFile: expected a string"
        );
        let no_column = ConfigError {
            column: None,
            ..full.clone()
        };
        assert_eq!(
            no_column.to_string(),
            "hmq.config:12: tlsInfo.certFile: expected a string"
        );
        let no_line = ConfigError {
            line: None,
            ..full.clone()
        };
        assert_eq!(
            no_line.to_string(),
            "hmq.config: tlsInfo.certFile: expected a string"
        );
        let bare = ConfigError::for_key("port", "bad");
        assert_eq!(bare.to_string(), "port: bad");
        let whole = ConfigError::in_origin("x.json", "cannot read");
        assert_eq!(whole.to_string(), "x.json: cannot read");
    }

    #[test]
    fn locates_nested_keys_by_path() {
        let text = "{\n  \"cluster\": {\"host\": \"a\", \"port\": 1},\n  \"port\": 2,\n  \"tlsInfo\": {\n    \"certFile\": \"port\"\n  },\n  \"plugins\": [{\"port\": 3}]\n}";
        let cases: &[(&str, Option<(usize, usize)>)] = &[
            ("cluster", Some((2, 3))),
            ("cluster.host", Some((2, 15))),
            ("cluster.port", Some((2, 28))),
            ("port", Some((3, 3))),
            ("tlsInfo.certFile", Some((5, 5))),
            ("plugins", Some((7, 3))),
            ("host", None),
            ("tlsInfo.keyFile", None),
            ("plugins.port", None),
        ];
        for (path, expected) in cases {
            assert_eq!(locate_key(text, path), *expected, "path {path}");
        }
    }

    #[test]
    fn suggests_near_names() {
        let known = ["wsPort", "wsPath", "wsTLS", "port", "tlsInfo"];
        assert_eq!(suggest("wsTls", &known), Some("wsTLS"));
        assert_eq!(suggest("wsPrt", &known), Some("wsPort"));
        assert_eq!(suggest("tlsinfo", &known), Some("tlsInfo"));
        assert_eq!(suggest("something", &known), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn rewrites_serde_messages() {
        let cases: &[(&str, &str)] = &[
            (
                "invalid type: integer `5`, expected a string",
                "expected a string, found integer `5`",
            ),
            (
                "invalid value: integer `-1`, expected u32",
                "expected an integer between 0 and 4294967295, found integer `-1`",
            ),
            (
                "invalid type: string \"x\", expected usize",
                "expected a non-negative integer, found string \"x\"",
            ),
            ("EOF while parsing an object", "EOF while parsing an object"),
        ];
        for (input, expected) in cases {
            assert_eq!(describe(input, None).1, *expected);
        }
        let (key, message) = describe(
            "unknown field `wsPrt`, expected one of `wsPort`, `port`",
            Some("wsPrt".into()),
        );
        assert_eq!(key.as_deref(), Some("wsPrt"));
        assert_eq!(message, "unknown key (did you mean `wsPort`?)");
    }
}
