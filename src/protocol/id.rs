//! Session ids: UUIDs in their canonical lowercase, hyphenated form.
//!
//! The id is also a subject token (`session.<id>.telemetry`), and NATS subjects are
//! case-sensitive: `ABC…` and `abc…` would be two different subject spaces, and a
//! dashboard on one would never see frames sent to the other. So exactly one spelling
//! is accepted everywhere — the one `sessions.create` hands out — and anything else is
//! a malformed id (400), never a new session.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};
use uuid::Uuid;

/// A validated session id. 16 bytes, `Copy`, cheap to hash: the session map's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(Uuid);

/// Why a string is not a session id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "malformed session id {shown:?}: expected a lowercase hyphenated UUID like 3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b"
)]
pub struct MalformedId {
    /// The offending input, cut short so a hostile id cannot bloat logs or replies.
    shown: String,
}

impl MalformedId {
    fn new(input: &str) -> Self {
        let shown = input.chars().take(40).collect();
        MalformedId { shown }
    }
}

impl SessionId {
    /// A fresh random (version 4) id.
    pub fn new_v4() -> Self {
        SessionId(Uuid::new_v4())
    }

    /// The id as written in subjects, without allocating: for the per-frame
    /// and per-key partition checks of partitioned ownership.
    pub fn encode<'b>(&self, buf: &'b mut [u8; 36]) -> &'b str {
        self.0.hyphenated().encode_lower(buf)
    }

    /// Accepts only the canonical form: 36 characters, hyphenated, lowercase hex.
    pub fn parse(input: &str) -> Result<Self, MalformedId> {
        // Length first: it rules out the braced, URN and simple forms that
        // `Uuid::try_parse` would otherwise accept, before any parsing work.
        if input.len() != 36 || input.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(MalformedId::new(input));
        }
        Uuid::try_parse(input)
            .map(SessionId)
            .map_err(|_| MalformedId::new(input))
    }
}

impl FromStr for SessionId {
    type Err = MalformedId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SessionId::parse(s)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `Uuid`'s Display is already the lowercase hyphenated form.
        fmt::Display::fmt(&self.0, f)
    }
}

impl Serialize for SessionId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Read in the canonical spelling only, like every id paddock accepts.
impl<'de> serde::Deserialize<'de> for SessionId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        SessionId::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A shared link's id (`sessions share`): 16 lowercase hex digits, random. It
/// names the link in `sessions.renew.link.<link>`, which the link's credentials
/// may publish and no other's, so the broker vouches for it on every renewal
/// (docs/SECURITY.md, "Taking a link back"). Not a secret: the credentials are.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(String);

/// Why a string is not a link id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed link id {shown:?}: expected 16 lowercase hex digits like 3f2b8c1e9a4d4e6f")]
pub struct MalformedLinkId {
    shown: String,
}

impl LinkId {
    /// A fresh random id: 64 bits of a version-4 UUID's randomness, plenty
    /// for the few thousand links a deployment holds at once.
    pub fn new_random() -> Self {
        let simple = Uuid::new_v4().simple().to_string();
        // The version and variant nibbles sit in the first half; the second is random.
        LinkId(simple[16..].to_string())
    }

    pub fn parse(input: &str) -> Result<Self, MalformedLinkId> {
        if input.len() == 16
            && input
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            Ok(LinkId(input.to_string()))
        } else {
            Err(MalformedLinkId {
                shown: input.chars().take(40).collect(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for LinkId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for LinkId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        LinkId::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_ids_are_16_lowercase_hex_digits() {
        let link = LinkId::new_random();
        assert_eq!(LinkId::parse(link.as_str()), Ok(link.clone()));
        assert_ne!(LinkId::new_random(), link);
        for bad in [
            "",
            "3F2B8C1E9A4D4E6F",
            "3f2b8c1e9a4d4e6",
            "3f2b8c1e9a4d4e6fa",
            "3f2b8c1e9a4d4e6g",
            "*",
            ">",
        ] {
            assert!(LinkId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn new_ids_are_version_4_and_round_trip() {
        let id = SessionId::new_v4();
        assert_eq!(id.0.get_version_num(), 4);
        assert_eq!(SessionId::parse(&id.to_string()), Ok(id));
    }

    #[test]
    fn only_the_canonical_form_is_accepted() {
        let id = SessionId::new_v4().to_string();
        for bad in [
            String::new(),
            "not-a-uuid".to_string(),
            id.to_uppercase(),
            id.replace('-', ""),
            format!("{{{id}}}"),
            format!("urn:uuid:{id}"),
            format!("{id}x"),
            "*".to_string(),
            ">".to_string(),
            "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz".to_string(),
        ] {
            assert!(SessionId::parse(&bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_error_shows_a_bounded_prefix_of_the_input() {
        let long = "a".repeat(10_000);
        let err = SessionId::parse(&long).unwrap_err().to_string();
        assert!(err.len() < 200, "{err}");
    }
}
