//! Validation of monitor payloads (setup and telemetry frames) without building a DOM.
//!
//! Every frame is checked before it can replace a session's last good state: it must
//! be non-empty, within the size limit, UTF-8, and one complete JSON object. The
//! syntax check ([`syntax`]) walks the bytes and builds nothing: no maps, strings or
//! numbers. The frame itself is then stored exactly as the monitor sent it, never
//! re-serialized.

mod pointer;
mod syntax;

pub use pointer::Pointer;

/// Why a payload was rejected. Each variant is one rejection reason in the counters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("empty payload: expected a JSON object")]
    Empty,
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("payload is not valid UTF-8 (at byte {at})")]
    InvalidUtf8 { at: usize },
    #[error("payload is JSON but not an object: expected {{…}}, got {found}")]
    NotObject { found: &'static str },
    #[error("malformed JSON: {reason}")]
    Malformed { reason: String },
}

impl PayloadError {
    /// A short stable label for counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            PayloadError::Empty => "empty",
            PayloadError::TooLarge { .. } => "too_large",
            PayloadError::InvalidUtf8 { .. } => "invalid_utf8",
            PayloadError::NotObject { .. } => "not_object",
            PayloadError::Malformed { .. } => "malformed_json",
        }
    }
}

/// Checks that `payload` is one JSON object of at most `limit` bytes.
pub fn validate_object(payload: &[u8], limit: usize) -> Result<(), PayloadError> {
    validate_object_finding(payload, limit, None).map(|_| ())
}

/// [`validate_object`], also answering where the value of the top-level member
/// `field` is, found in the same pass (the lap field on the hot path).
pub fn validate_object_finding(
    payload: &[u8],
    limit: usize,
    field: Option<&str>,
) -> Result<Option<std::ops::Range<usize>>, PayloadError> {
    if payload.len() > limit {
        return Err(PayloadError::TooLarge {
            size: payload.len(),
            limit,
        });
    }
    // UTF-8 is checked only where it can fail: the syntax check says whether
    // any byte was past ASCII; and when the syntax is wrong, invalid UTF-8 (then
    // emptiness) is the reason given, as it is the more basic fault.
    let utf8 = || {
        std::str::from_utf8(payload)
            .map(|_| ())
            .map_err(|e| PayloadError::InvalidUtf8 {
                at: e.valid_up_to(),
            })
    };
    let checked = match field {
        None => syntax::check(payload),
        Some(field) => syntax::check_finding(payload, field),
    };
    let checked = match checked {
        Ok(checked) => checked,
        Err(reason) => {
            utf8()?;
            if payload.iter().all(u8::is_ascii_whitespace) {
                return Err(PayloadError::Empty);
            }
            return Err(PayloadError::Malformed { reason });
        }
    };
    if !checked.ascii {
        utf8()?;
    }
    // A well-formed document has a first non-whitespace byte.
    let first = payload
        .iter()
        .copied()
        .find(|b| !b.is_ascii_whitespace())
        .unwrap_or(b'{');
    if first != b'{' {
        // Well-formed but not an object: name what was sent, which helps a monitor
        // author more than a generic "invalid type".
        let found = match first {
            b'[' => "an array",
            b'"' => "a string",
            b't' | b'f' => "a boolean",
            b'n' => "null",
            _ => "a number",
        };
        return Err(PayloadError::NotObject { found });
    }
    Ok(checked.found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1024;

    #[test]
    fn objects_pass() {
        for ok in [
            &b"{}"[..],
            b" {\"a\": [1, {\"b\": null}]} \n",
            b"{\"s\":\"\\u00e9\\n\"}",
            "{\"driver\": \"Sébastien Pérez 🏁\"}".as_bytes(),
        ] {
            assert_eq!(
                validate_object(ok, LIMIT),
                Ok(()),
                "{:?}",
                String::from_utf8_lossy(ok)
            );
        }
    }

    #[test]
    fn the_sample_frames_pass() {
        for sample in [
            include_str!("../../tests/data/telemetry.json"),
            include_str!("../../tests/data/telemetry-rich.json"),
            include_str!("../../tests/data/setup.json"),
        ] {
            assert_eq!(validate_object(sample.as_bytes(), 64 * 1024), Ok(()));
        }
    }

    #[test]
    fn each_bad_class_has_its_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (b"   \n", "empty"),
            (b"\xff\xfe{}", "invalid_utf8"),
            (b"{\"a\": \"\xff\"}", "invalid_utf8"),
            (b"{\"a\": \"ok\"} \xe9", "invalid_utf8"),
            ("{\"a\": é}".as_bytes(), "malformed_json"),
            (b"{\"a\": \"\xc3\x28\"}", "invalid_utf8"),
            (b"[1, 2]", "not_object"),
            (b"\"frame\"", "not_object"),
            (b"42", "not_object"),
            (b"null", "not_object"),
            (b"true", "not_object"),
            (b"{", "malformed_json"),
            (b"{\"a\": 1,}", "malformed_json"),
            (b"{} {}", "malformed_json"),
            (b"{\"a\": NaN}", "malformed_json"),
            (b"[1,", "malformed_json"),
            (b"hello", "malformed_json"),
            (b"<xml/>", "malformed_json"),
        ];
        for (input, reason) in cases {
            let err = validate_object(input, LIMIT).expect_err(&format!("{input:?} passed"));
            assert_eq!(err.reason(), *reason, "{input:?}: {err}");
        }
    }

    #[test]
    fn oversized_is_rejected_before_parsing() {
        let big = vec![b'x'; LIMIT + 1];
        assert_eq!(
            validate_object(&big, LIMIT),
            Err(PayloadError::TooLarge {
                size: LIMIT + 1,
                limit: LIMIT
            })
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!("{}{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
        assert_eq!(
            validate_object(deep.as_bytes(), usize::MAX)
                .unwrap_err()
                .reason(),
            "malformed_json"
        );
    }
}
