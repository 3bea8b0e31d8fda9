//! A JSON syntax check (RFC 8259) that builds nothing: the hot path's validator.
//!
//! It accepts what `serde_json::from_slice::<IgnoredAny>` accepts — the
//! differential test below holds it to that on mutated frames — except nesting
//! deeper than [`MAX_DEPTH`], in fewer instructions: serde steps through every
//! key and number with its general machinery, where this only walks the bytes
//! (`paddock bench --only callgrind` counts both versions' cost per frame).
//! Like serde's `IgnoredAny`, it checks `\u` escapes for four hex digits but not
//! whether they pair into a valid code point. UTF-8 is left to the caller, with
//! a hint: bytes past ASCII can only be valid inside strings, so the scan notes
//! whether a string held any ([`Checked::ascii`]), and a frame that is all ASCII,
//! as telemetry usually is, needs no UTF-8 pass at all.

/// Nesting deeper than this is refused (serde_json's recursion limit): a frame
/// of a million `[` must cost nothing but a quick refusal.
pub(crate) const MAX_DEPTH: u32 = 128;

/// What a successful check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checked {
    /// Where the value of the member asked for is ([`check_finding`]).
    pub(crate) found: Option<std::ops::Range<usize>>,
    /// Whether every byte was ASCII: if not, the caller must check UTF-8 (the
    /// bytes past ASCII were all inside strings, which JSON allows).
    pub(crate) ascii: bool,
}

/// Checks that `bytes` is one JSON value with only whitespace around it. The error
/// says what was expected and where (a byte offset).
pub(crate) fn check(bytes: &[u8]) -> Result<Checked, String> {
    document::<false>(bytes, "").map_err(|e| e.describe(bytes))
}

/// The same check, also answering where the value of the top-level member `field`
/// is (the last one, as serde_json keeps the last of duplicate keys): the lap field
/// is found in the same pass, for a compare per top-level key.
pub(crate) fn check_finding(bytes: &[u8], field: &str) -> Result<Checked, String> {
    document::<true>(bytes, field).map_err(|e| e.describe(bytes))
}

/// Bytes that end the fast scan inside a string: the quote, the backslash, the
/// control characters JSON does not allow unescaped, and bytes past ASCII (noted
/// for the caller's UTF-8 check, then skipped).
static STRING_STOP: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    let mut b = 0x80;
    while b < 0x100 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Where the check failed and what it expected there: eight bytes, so that a
/// scanner's `Result<usize, Failure>` comes back in two registers. The message is
/// only formatted for a frame that is refused.
#[derive(Debug, Clone, Copy)]
struct Failure {
    at: u32,
    expected: Expected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    Value,
    End,
    CommaOrBrace,
    CommaOrBracket,
    Key,
    Colon,
    HexDigit,
    Escape,
    NoControl,
    StringEnd,
    Digit,
    True,
    False,
    Null,
    LessNesting,
}

fn fail<T>(at: usize, expected: Expected) -> Result<T, Failure> {
    Err(Failure {
        at: u32::try_from(at).unwrap_or(u32::MAX),
        expected,
    })
}

impl Failure {
    fn describe(self, bytes: &[u8]) -> String {
        let at = self.at as usize;
        let expected = match self.expected {
            Expected::LessNesting => {
                return format!("nested deeper than {MAX_DEPTH} levels at byte {at}");
            }
            Expected::Value => "a value",
            Expected::End => "the end of the payload",
            Expected::CommaOrBrace => "',' or '}'",
            Expected::CommaOrBracket => "',' or ']'",
            Expected::Key => "a string key",
            Expected::Colon => "':'",
            Expected::HexDigit => "a hex digit of a \\u escape",
            Expected::Escape => "an escape character",
            Expected::NoControl => "no control character in a string",
            Expected::StringEnd => "the end of a string",
            Expected::Digit => "a digit",
            Expected::True => "true",
            Expected::False => "false",
            Expected::Null => "null",
        };
        match bytes.get(at) {
            Some(&b) if b.is_ascii_graphic() => {
                format!("expected {expected} at byte {at}, found '{}'", b as char)
            }
            Some(b) => format!("expected {expected} at byte {at}, found byte 0x{b:02x}"),
            None => format!("expected {expected} at byte {at}, found the end"),
        }
    }
}

// The scanners below take the slice and a position and answer the position after
// what they read: the position stays in a register, and every index is checked by
// `get`, so hostile input can only fail, never read out of bounds.

/// `FIND`: whether to look for `field` at all. A constant, so the plain check
/// (setups, or lap history off) compiles without the look-out.
fn document<const FIND: bool>(b: &[u8], field: &str) -> Result<Checked, Failure> {
    // One bit per open container: 1 for an object, 0 for an array.
    let mut stack: u128 = 0;
    let mut depth: u32 = 0;
    let mut i = 0;
    // `field`'s value: where it starts once its key is read, and where it ends
    // once the scan is back at depth 1 after it.
    let mut found: Option<(usize, usize)> = None;
    let mut pending: Option<usize> = None;
    let mut ascii = true;
    'value: loop {
        i = whitespace(b, i);
        match b.get(i) {
            // Objects and arrays open alike, but in two arms: one arm that picks
            // its closer and key at run time costs ~1% more per frame (callgrind).
            Some(b'{') => {
                if depth == MAX_DEPTH {
                    return fail(i, Expected::LessNesting);
                }
                i = whitespace(b, i + 1);
                if b.get(i) == Some(&b'}') {
                    i += 1;
                } else {
                    depth += 1;
                    stack = (stack << 1) | 1;
                    let quote = i;
                    let key_end;
                    (i, key_end) = key(b, i, &mut ascii)?;
                    if FIND && depth == 1 && key_is(b, quote, key_end, field) {
                        pending = Some(i);
                    }
                    continue 'value;
                }
            }
            Some(b'[') => {
                if depth == MAX_DEPTH {
                    return fail(i, Expected::LessNesting);
                }
                i = whitespace(b, i + 1);
                if b.get(i) == Some(&b']') {
                    i += 1;
                } else {
                    depth += 1;
                    stack <<= 1;
                    continue 'value;
                }
            }
            Some(b'"') => i = string(b, i + 1, &mut ascii)?,
            Some(b'-' | b'0'..=b'9') => i = number(b, i)?,
            Some(b't') => i = literal(b, i, b"true")?,
            Some(b'f') => i = literal(b, i, b"false")?,
            Some(b'n') => i = literal(b, i, b"null")?,
            _ => return fail(i, Expected::Value),
        }
        // After a value: close containers until one expects another value.
        loop {
            if FIND
                && let Some(start) = pending
                && depth == 1
            {
                found = Some((whitespace(b, start), i));
                pending = None;
            }
            i = whitespace(b, i);
            if depth == 0 {
                return match b.get(i) {
                    None => Ok(Checked {
                        found: found.map(|(start, end)| start..end),
                        ascii,
                    }),
                    Some(_) => fail(i, Expected::End),
                };
            }
            let in_object = stack & 1 == 1;
            match b.get(i) {
                Some(b',') if in_object => {
                    let quote = whitespace(b, i + 1);
                    let key_end;
                    (i, key_end) = key(b, quote, &mut ascii)?;
                    if FIND && depth == 1 && key_is(b, quote, key_end, field) {
                        pending = Some(i);
                    }
                    continue 'value;
                }
                Some(b',') => {
                    i += 1;
                    continue 'value;
                }
                Some(b'}') if in_object => {}
                Some(b']') if !in_object => {}
                _ if in_object => return fail(i, Expected::CommaOrBrace),
                _ => return fail(i, Expected::CommaOrBracket),
            }
            i += 1;
            depth -= 1;
            stack >>= 1;
        }
    }
}

/// Skips whitespace. Monitors send compact JSON, so the usual answer is "none":
/// one comparison (every whitespace byte is at most b' ') before the loop.
#[inline(always)]
fn whitespace(b: &[u8], mut i: usize) -> usize {
    if b.get(i).is_none_or(|&c| c > b' ') {
        return i;
    }
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = b.get(i) {
        i += 1;
    }
    i
}

/// `"key"` then `:`, at the start of a member; answers the position after the colon.
#[inline(always)]
fn key(b: &[u8], i: usize, ascii: &mut bool) -> Result<(usize, usize), Failure> {
    if b.get(i) != Some(&b'"') {
        return fail(i, Expected::Key);
    }
    let end = string(b, i + 1, ascii)?;
    let i = whitespace(b, end);
    if b.get(i) != Some(&b':') {
        return fail(i, Expected::Colon);
    }
    Ok((i + 1, end))
}

/// Whether the key whose quotes are at `quote` and `key_end - 1` is `field`.
/// Most keys differ in their first byte, which is all this looks at for them.
#[inline(always)]
fn key_is(b: &[u8], quote: usize, key_end: usize, field: &str) -> bool {
    let first = b.get(quote + 1).copied();
    if first != field.as_bytes().first().copied() && first != Some(b'\\') {
        return false;
    }
    b.get(quote + 1..key_end - 1)
        .is_some_and(|raw| key_matches(raw, field))
}

/// A key, as it is between its quotes, against `field`: only a key that could be
/// `field` spelled with escapes (longer, with a backslash) is decoded.
fn key_matches(raw: &[u8], field: &str) -> bool {
    let f = field.as_bytes();
    if raw == f {
        return true;
    }
    let could_be_escaped = raw.len() > f.len()
        && (raw.first() == Some(&b'\\') || raw.first() == f.first())
        && raw.contains(&b'\\');
    could_be_escaped && {
        let mut quoted = Vec::with_capacity(raw.len() + 2);
        quoted.push(b'"');
        quoted.extend_from_slice(raw);
        quoted.push(b'"');
        serde_json::from_slice::<String>(&quoted).is_ok_and(|key| key == field)
    }
}

/// The rest of a string, from just after its opening quote; clears `ascii` at a
/// byte past ASCII.
#[inline(always)]
fn string(b: &[u8], mut i: usize, ascii: &mut bool) -> Result<usize, Failure> {
    loop {
        i = plain(b, i);
        match b.get(i) {
            Some(b'"') => return Ok(i + 1),
            Some(b'\\') => match b.get(i + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                Some(b'u') => {
                    i += 2;
                    for _ in 0..4 {
                        if !b.get(i).is_some_and(u8::is_ascii_hexdigit) {
                            return fail(i, Expected::HexDigit);
                        }
                        i += 1;
                    }
                }
                _ => return fail(i + 1, Expected::Escape),
            },
            Some(&c) if c >= 0x80 => {
                *ascii = false;
                i += 1;
            }
            Some(_) => return fail(i, Expected::NoControl),
            None => return fail(i, Expected::StringEnd),
        }
    }
}

/// Skips the bytes of a string that need no look, up to the first of
/// [`STRING_STOP`] (or the end): sixteen at a time while sixteen are left, so a
/// typical key or short value is one step instead of a branch per byte.
#[inline(always)]
fn plain(b: &[u8], mut i: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    while let Some(chunk) = b.get(i..i + 16) {
        let stops = sse2::stops(chunk.try_into().expect("16 bytes"));
        if stops != 0 {
            return i + stops.trailing_zeros() as usize;
        }
        i += 16;
    }
    while let Some(&c) = b.get(i) {
        if STRING_STOP[c as usize] {
            break;
        }
        i += 1;
    }
    i
}

/// SSE2 is part of every x86_64 CPU, so this needs no detection at run time.
#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };

    /// One bit per byte of `chunk` (lowest bit: first byte) that is in
    /// [`super::STRING_STOP`]: a quote, a backslash, a control character or a
    /// byte past ASCII.
    #[inline(always)]
    pub(super) fn stops(chunk: &[u8; 16]) -> u32 {
        // SAFETY: every x86_64 CPU has SSE2 (the target enables it), and the
        // unaligned load reads exactly the 16 bytes `chunk` borrows.
        unsafe {
            let v = _mm_loadu_si128(chunk.as_ptr().cast());
            let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            // A signed compare: bytes past ASCII are negative, so "below 0x20"
            // catches them and the control characters at once.
            let low = _mm_cmplt_epi8(v, _mm_set1_epi8(0x20));
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), low)) as u32
        }
    }
}

/// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`; what follows is
/// checked by the caller (so `01` fails there, as "expected ',' …").
#[inline(always)]
fn number(b: &[u8], mut i: usize) -> Result<usize, Failure> {
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(b, i + 1),
        _ => return fail(i, Expected::Digit),
    }
    if b.get(i) == Some(&b'.') {
        i = some_digits(b, i + 1)?;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        i = some_digits(b, i)?;
    }
    Ok(i)
}

#[inline]
fn digits(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

#[inline]
fn some_digits(b: &[u8], i: usize) -> Result<usize, Failure> {
    if !b.get(i).is_some_and(u8::is_ascii_digit) {
        return fail(i, Expected::Digit);
    }
    Ok(digits(b, i + 1))
}

fn literal(b: &[u8], i: usize, word: &'static [u8]) -> Result<usize, Failure> {
    if b[i..].starts_with(word) {
        Ok(i + word.len())
    } else {
        fail(
            i,
            match word {
                b"true" => Expected::True,
                b"false" => Expected::False,
                _ => Expected::Null,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::IgnoredAny;

    fn serde_accepts(bytes: &[u8]) -> bool {
        serde_json::from_slice::<IgnoredAny>(bytes).is_ok()
    }

    fn agree(bytes: &[u8]) {
        // Both are asked about UTF-8 text only: the caller checks UTF-8 first.
        if std::str::from_utf8(bytes).is_err() {
            return;
        }
        let ours = check(bytes);
        assert_eq!(
            ours.is_ok(),
            serde_accepts(bytes),
            "{:?}: ours {ours:?}",
            String::from_utf8_lossy(bytes)
        );
    }

    #[test]
    fn the_field_is_found_in_the_same_pass_last_one_wins() {
        let find = |s: &str| {
            check_finding(s.as_bytes(), "lap")
                .unwrap()
                .found
                .map(|r| s[r].to_string())
        };
        assert_eq!(find(r#"{"lap":14}"#).as_deref(), Some("14"));
        assert_eq!(
            find(r#" { "a": {"lap": 1}, "lap" : [1, {"x": 2}] , "b": 3 } "#).as_deref(),
            Some("[1, {\"x\": 2}]")
        );
        assert_eq!(
            find(r#"{"lap": 1, "lap": "two"}"#).as_deref(),
            Some("\"two\"")
        );
        assert_eq!(find(r#"{"l\u0061p": 5}"#).as_deref(), Some("5"));
        assert_eq!(find(r#"{"laps": 1, "la": 2, "lap\"": 3}"#), None);
        assert_eq!(find(r#"{"a": {"lap": 1}}"#), None);
        assert_eq!(find(r#"[{"lap": 1}]"#), None);
        assert!(check_finding(br#"{"lap": }"#, "lap").is_err());
    }

    #[test]
    fn bytes_past_ascii_are_noted_in_strings_and_refused_elsewhere() {
        assert!(check(br#"{"a": "x", "b": [1, 2.5]}"#).unwrap().ascii);
        assert!(!check("{\"name\": \"Pérez\"}".as_bytes()).unwrap().ascii);
        // Not UTF-8, but inside a string: for the caller's UTF-8 check to refuse.
        assert!(!check(b"{\"a\": \"\xff\"}").unwrap().ascii);
        assert!(check("{\"a\": é}".as_bytes()).is_err());
        assert!(check("{é: 1}".as_bytes()).is_err());
    }

    #[test]
    fn agrees_with_serde_on_edge_cases() {
        let cases: &[&[u8]] = &[
            b"{}",
            b"[]",
            b" { } ",
            b"{\"a\":1}",
            b"{\"a\":-0.5e+10}",
            b"{\"a\":1E5}",
            b"{\"a\":01}",
            b"{\"a\":-}",
            b"{\"a\":1.}",
            b"{\"a\":.5}",
            b"{\"a\":1e}",
            b"{\"a\":+1}",
            b"{\"a\":1e999}",
            b"{\"a\":-0}",
            b"{\"a\":[1,2,[3,{\"b\":null}]]}",
            b"{\"a\":[1,]}",
            b"{\"a\":[,1]}",
            b"{\"a\" 1}",
            b"{a:1}",
            b"{\"a\":1,}",
            b"{,}",
            b"{\"a\":tru}",
            b"{\"a\":truex}",
            b"{\"a\":nul}",
            b"{\"a\":falsey}",
            b"{\"s\":\"\\u00e9\\n\\\"\\/\"}",
            b"{\"s\":\"\\ud800\"}",
            b"{\"s\":\"\\u12\"}",
            b"{\"s\":\"\\uzzzz\"}",
            b"{\"s\":\"\\x\"}",
            b"{\"s\":\"a\tb\"}",
            b"{\"s\":\"a\x7fb\"}",
            b"{\"s\":\"unterminated}",
            b"{\"a\":1}}",
            b"{\"a\":1} x",
            b"{\"a\":1}\x0c",
            b"\t\r\n{}\t\r\n",
            b"{} {}",
            b"\"str\"",
            b"42",
            b"-",
            b"",
            b"   ",
            b"{\"\xc3\xa9\":\"\xe2\x82\xac\"}",
            b"[1,2",
            b"{\"a\":[}",
            b"{\"a\":{]}",
            b"nulll",
        ];
        for case in cases {
            agree(case);
        }
    }

    /// The sixteen-byte step stops where the table does: every byte value, at
    /// every position of a run longer than two steps, from every start.
    #[test]
    fn the_plain_run_stops_at_the_first_stop_byte() {
        let by_table = |b: &[u8], mut i: usize| {
            while b.get(i).is_some_and(|&c| !STRING_STOP[c as usize]) {
                i += 1;
            }
            i
        };
        for stop in 0..=255u8 {
            for at in 0..40 {
                let mut run = vec![b'a'; 40];
                run[at] = stop;
                for start in 0..=at {
                    assert_eq!(plain(&run, start), by_table(&run, start), "{stop} at {at}");
                }
            }
        }
    }

    /// The one difference from `IgnoredAny`, which has no depth limit: the limit
    /// protects the dashboards that parse stored frames (serde_json's `Value`
    /// stops at 128 levels too).
    #[test]
    fn nesting_up_to_the_limit_passes_and_deeper_is_refused() {
        let nested = |depth: usize| {
            format!(
                "{}1{}",
                "{\"a\":[".repeat(depth / 2),
                "]}".repeat(depth / 2)
            )
        };
        for depth in [2, 64, 128] {
            agree(nested(depth).as_bytes());
            assert!(check(nested(depth).as_bytes()).is_ok(), "{depth}");
        }
        for depth in [130, 1_000_000] {
            assert!(serde_accepts(nested(depth).as_bytes()));
            let refused = check(nested(depth).as_bytes()).unwrap_err();
            assert!(refused.contains("nested deeper than 128"), "{refused}");
        }
    }

    /// Every sample frame, mutated many times over (bytes flipped, deleted,
    /// duplicated, swapped for JSON's structural characters): the two must agree
    /// on every result.
    #[test]
    fn agrees_with_serde_on_mutated_frames() {
        let samples = [
            include_str!("../../../tests/data/telemetry.json"),
            include_str!("../../../tests/data/telemetry-rich.json"),
            include_str!("../../../tests/data/setup.json"),
        ];
        let alphabet = b"{}[]:,\"\\-+.eE0123456789 tfnu\n";
        // xorshift64*: deterministic, so a failure reproduces.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let mut accepted = 0;
        for round in 0..20_000 {
            let mut bytes = samples[round % samples.len()].as_bytes().to_vec();
            if round % 2 == 0 {
                // Compact, as monitors send.
                let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                bytes = value.to_string().into_bytes();
            }
            for _ in 0..=(next() % 3) {
                let at = (next() as usize) % bytes.len();
                match next() % 4 {
                    0 => bytes[at] = alphabet[(next() as usize) % alphabet.len()],
                    1 => {
                        bytes.remove(at);
                    }
                    2 => bytes.insert(at, alphabet[(next() as usize) % alphabet.len()]),
                    _ => bytes.truncate(at),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            agree(&bytes);
            accepted += check(&bytes).is_ok() as usize;
            // The lap field found in the same pass is where serde_json finds it.
            if let Ok(Some(value)) = serde_json::from_slice::<serde_json::Value>(&bytes)
                .map(|v| v.as_object().map(|o| o.get("lap").cloned()))
            {
                let ours = check_finding(&bytes, "lap")
                    .unwrap()
                    .found
                    .map(|r| serde_json::from_slice::<serde_json::Value>(&bytes[r]).unwrap());
                assert_eq!(ours, value, "{:?}", String::from_utf8_lossy(&bytes));
            }
        }
        // The mutations must exercise both outcomes to mean anything.
        assert!(accepted > 1_000 && accepted < 19_000, "{accepted}");
    }
}
