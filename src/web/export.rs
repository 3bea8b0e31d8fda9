//! `POST /export/motec`: a lap the page read turned into MoTeC i2 files.
//!
//! The page asks `sessions.trace` itself, with the credentials it holds, and
//! posts the reply here; this side only converts it ([`crate::export::motec`])
//! and answers a zip of the `.ld` and its `.ldx` (i2 wants both side by side).
//! So the HTTP side still reads no session and holds no credentials: anyone
//! who can post here can only convert what they already have. Writing the
//! format in the page's script instead would be a second writer to keep in
//! step with this one.

use std::io::Write as _;

use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::export::motec::{self, Details};
use crate::protocol::trace::{MAX_REPLY_BYTES, Trace};

/// A body may hold what `sessions.trace` answers at most (900 KiB) and the
/// details beside it; larger is refused (413) before it is read whole.
pub const MAX_BODY_BYTES: usize = MAX_REPLY_BYTES + 64 * 1024;

/// Samples one request may have written: 2 Mi (8 MB of f32), nearly three
/// times what the longest lap `sessions.trace` reads needs (108,000 frames,
/// half an hour at 60 Hz: 756,000 samples in 7 channels). A small body can
/// name a long span at a high rate; this, not the body's size, bounds what
/// it costs.
pub const MAX_SAMPLES: usize = 2 * 1024 * 1024;

/// Conversions at once: each holds up to [`MAX_SAMPLES`] and its zip, so a
/// burst of posts waits here rather than multiplying that (2 × 8 MB and
/// their zips at most).
static AT_ONCE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// What the page posts.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    /// Recorded laps (`sessions.trace` with `"raw": true`), in order.
    traces: Vec<Trace>,
    #[serde(default)]
    details: Details,
    /// The files' name without extension (`<id>-lap<N>`).
    #[serde(default)]
    name: Option<String>,
}

/// Letters, digits, `-`, `_` and `.` only: the name goes into a header and
/// the zip's entries.
fn file_name(asked: Option<&str>) -> String {
    let name: String = asked
        .unwrap_or("lap")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .take(100)
        .collect();
    if name.trim_matches('.').is_empty() {
        "lap".into()
    } else {
        name
    }
}

fn refuse(code: StatusCode, why: String) -> Response {
    (code, format!("{why}\n")).into_response()
}

pub async fn motec(body: Bytes) -> Response {
    let request: Request = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!(
                    r#"{e}: send {{"traces": [<sessions.trace reply with "raw": true>], "details": {{"driver", "vehicle", "venue"}}, "name"}}"#
                ),
            );
        }
    };
    let name = file_name(request.name.as_deref());
    let Ok(_permit) = AT_ONCE.acquire().await else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "shutting down".into());
    };
    // The conversion and the deflate are CPU work of up to tens of
    // milliseconds: off the runtime's threads.
    match tokio::task::spawn_blocking(move || convert(&request, &name)).await {
        Ok(response) => response,
        Err(e) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot convert: {e}"),
        ),
    }
}

/// The request's laps as a zip of `<name>.ld` and `<name>.ldx`, or the
/// refusal that says why not.
fn convert(request: &Request, name: &str) -> Response {
    let files = match motec::write_within(&request.traces, &request.details, MAX_SAMPLES) {
        Ok(files) => files,
        Err(e @ motec::MotecError::TooLarge { .. }) => {
            return refuse(StatusCode::PAYLOAD_TOO_LARGE, e.to_string());
        }
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let zipped = (|| -> zip::result::ZipResult<Vec<u8>> {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file(format!("{name}.ld"), options)?;
        zip.write_all(&files.ld)?;
        zip.start_file(format!("{name}.ldx"), options)?;
        zip.write_all(files.ldx.as_bytes())?;
        Ok(zip.finish()?.into_inner())
    })();
    match zipped {
        Ok(bytes) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/zip"),
                ),
                (
                    header::CONTENT_DISPOSITION,
                    HeaderValue::from_str(&format!(r#"attachment; filename="{name}-motec.zip""#))
                        .unwrap_or(HeaderValue::from_static("attachment")),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot zip: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_name_is_only_safe_characters() {
        assert_eq!(file_name(Some("3f2b-lap4")), "3f2b-lap4");
        assert_eq!(file_name(Some("../../etc/passwd\"\r\n")), "....etcpasswd");
        assert_eq!(file_name(Some("..")), "lap");
        assert_eq!(file_name(None), "lap");
    }
}
