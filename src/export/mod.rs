//! Laps written as other tools' files: MoTeC i2's `.ld` and `.ldx`
//! ([`motec`]). Pure like `protocol`: recorded traces (`sessions.trace` with
//! `"raw": true`) in, bytes out; `paddock sessions export` writes them to
//! disk and the page's HTTP side (`POST /export/motec`) hands them to the
//! browser.

pub mod motec;
