//! Finding one value in a frame by JSON pointer (RFC 6901), without building a DOM.
//!
//! Lap history reads one field of every telemetry frame (`--lap-field`, `/lap` by
//! default). A top-level field (one token, the usual case) is found by the syntax
//! check itself, in the same pass (`payload::validate_object_finding`). A nested
//! one is found here, after the check: this walks the members of each object on
//! the way, skipping other keys' values by bracket and quote counting, to the end
//! of each object (the last of duplicate keys wins, as in serde_json), so it costs
//! a second pass over the objects on the path; `paddock bench --only callgrind`
//! counts both.

use std::ops::Range;

/// A parsed JSON pointer: `/lap`, `/session/lap`, `/laps/0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    /// Unescaped tokens (`~1` is `/`, `~0` is `~`).
    tokens: Vec<String>,
    text: String,
}

impl Pointer {
    /// Parses `text`; it must start with `/` and name at least one token.
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!(
                "{text:?} is not a JSON pointer: it must start with '/', e.g. /lap"
            ));
        };
        let mut tokens = Vec::new();
        for raw in rest.split('/') {
            let mut token = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    token.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => token.push('~'),
                    Some('1') => token.push('/'),
                    _ => return Err(format!("{text:?}: '~' must be followed by 0 or 1")),
                }
            }
            tokens.push(token);
        }
        Ok(Pointer {
            tokens,
            text: text.to_string(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The top-level member the pointer's value is in (its first token).
    pub fn first_token(&self) -> &str {
        self.tokens.first().map_or("", String::as_str)
    }

    /// The key, when the pointer names a member of the top-level object.
    pub fn top_level_key(&self) -> Option<&str> {
        match self.tokens.as_slice() {
            [key] => Some(key),
            _ => None,
        }
    }

    /// Where the value this pointer names sits in `frame`, if it is there. `frame`
    /// must be valid JSON (it passed `validate_object`); on anything else the answer
    /// is `None` or a wrong range, never a panic.
    pub fn find(&self, frame: &[u8]) -> Option<Range<usize>> {
        // Only the values on the way are walked to their end; the document's own
        // end is never looked for (that would scan the whole frame).
        let (mut at, mut end) = (whitespace(frame, 0), frame.len());
        for token in &self.tokens {
            (at, end) = child(frame, at, token)?;
        }
        Some(at..end)
    }
}

impl std::fmt::Display for Pointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The member `token` of the object at `at`, or its element `token` if an array.
fn child(b: &[u8], at: usize, token: &str) -> Option<(usize, usize)> {
    match b.get(at)? {
        b'{' => {
            let mut i = whitespace(b, at + 1);
            if b.get(i)? == &b'}' {
                return None;
            }
            let mut found = None;
            loop {
                let key_end = skip_string(b, i + 1)?;
                let key = &b[i + 1..key_end - 1];
                i = whitespace(b, key_end);
                if b.get(i)? != &b':' {
                    return None;
                }
                let value = whitespace(b, i + 1);
                let value_end = skip_value(b, value)?;
                if key_matches(key, token) {
                    found = Some((value, value_end));
                }
                i = whitespace(b, value_end);
                if b.get(i)? != &b',' {
                    return found;
                }
                i = whitespace(b, i + 1);
            }
        }
        b'[' => {
            // RFC 6901: an index is 0 or digits without a leading zero.
            if token.is_empty() || (token.len() > 1 && token.starts_with('0')) {
                return None;
            }
            let index: usize = token.parse().ok()?;
            let mut i = whitespace(b, at + 1);
            if b.get(i)? == &b']' {
                return None;
            }
            for n in 0.. {
                let end = skip_value(b, i)?;
                if n == index {
                    return Some((i, end));
                }
                i = whitespace(b, end);
                if b.get(i)? != &b',' {
                    return None;
                }
                i = whitespace(b, i + 1);
            }
            None
        }
        _ => None,
    }
}

/// Compares a raw key (between its quotes) with an unescaped token. Keys with
/// escapes are rare in telemetry; only those are decoded.
fn key_matches(raw: &[u8], token: &str) -> bool {
    if !raw.contains(&b'\\') {
        return raw == token.as_bytes();
    }
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    serde_json::from_slice::<String>(&quoted).is_ok_and(|key| key == token)
}

fn whitespace(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = b.get(i) {
        i += 1;
    }
    i
}

/// The position after the string whose opening quote is just before `i`.
fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        match b.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

/// The position after the (valid) value starting at `i`.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => skip_string(b, i + 1),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match b.get(j)? {
                    b'"' => {
                        j = skip_string(b, j + 1)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while let Some(c) = b.get(j) {
                if matches!(c, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t') {
                    break;
                }
                j += 1;
            }
            Some(j)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at<'a>(pointer: &str, frame: &'a str) -> Option<&'a str> {
        let range = Pointer::parse(pointer).unwrap().find(frame.as_bytes())?;
        Some(&frame[range])
    }

    #[test]
    fn finds_top_level_nested_and_indexed_values() {
        let frame = r#" { "a" : {"lap" : 3}, "s": "x,}]\"{", "lap":14 , "laps": [ 1, {"n": [7]} ], "z": null } "#;
        assert_eq!(at("/lap", frame), Some("14"));
        assert_eq!(at("/a/lap", frame), Some("3"));
        assert_eq!(at("/s", frame), Some(r#""x,}]\"{""#));
        assert_eq!(at("/laps/0", frame), Some("1"));
        assert_eq!(at("/laps/1/n/0", frame), Some("7"));
        assert_eq!(at("/z", frame), Some("null"));
        assert_eq!(at("/missing", frame), None);
        assert_eq!(at("/laps/2", frame), None);
        assert_eq!(at("/laps/01", frame), None);
        assert_eq!(at("/lap/x", frame), None);
        assert_eq!(at("/lap", "{}"), None);
        assert_eq!(
            at("/a/b", r#"{"a": {"b": 1, "b": 2}}"#),
            Some("2"),
            "the last wins"
        );
    }

    #[test]
    fn escaped_keys_and_tokens_match() {
        assert_eq!(at("/a~1b", r#"{"a/b": 1}"#), Some("1"));
        assert_eq!(at("/m~0n", r#"{"m~n": 2}"#), Some("2"));
        assert_eq!(at("/lap", r#"{"l\u0061p": 3}"#), Some("3"));
        assert!(Pointer::parse("lap").is_err());
        assert!(Pointer::parse("/a~2").is_err());
    }

    #[test]
    fn agrees_with_serde_json_on_the_sample_frames() {
        for frame in [
            include_str!("../../../tests/data/telemetry.json"),
            include_str!("../../../tests/data/telemetry-rich.json"),
        ] {
            let value: serde_json::Value = serde_json::from_str(frame).unwrap();
            for pointer in ["/lap", "/tire_temps/fl", "/fuel", "/nope", "/tire_temps"] {
                let ours = at(pointer, frame)
                    .map(|raw| serde_json::from_str::<serde_json::Value>(raw).unwrap());
                assert_eq!(ours.as_ref(), value.pointer(pointer), "{pointer}");
            }
        }
    }

    #[test]
    fn never_panics_on_broken_input() {
        for frame in [
            "",
            "{",
            r#"{"lap""#,
            r#"{"lap":"#,
            "[",
            r#"{"a":[1,"#,
            "\"",
            "{\"x\":\"\\",
        ] {
            let _ = at("/lap", frame);
            let _ = at("/a/0", frame);
        }
    }
}
