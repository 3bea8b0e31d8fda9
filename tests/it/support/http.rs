//! The processor's HTTP side as a client sees it.

use std::time::{Duration, Instant};

/// A client that takes any status as an answer, and gives up after 5 s.
fn agent() -> ureq::Agent {
    agent_waiting(Duration::from_secs(5))
}

/// A client that takes any status as an answer, and gives up after `timeout`.
pub fn agent_waiting(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .new_agent()
}

/// `GET http://<addr><path>`: the status and body (a 503 is an answer, not an error).
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let url = format!("http://{addr}{path}");
    tokio::task::spawn_blocking(move || {
        let agent = agent();
        let mut response = agent.get(&url).call().ok()?;
        let status = response.status().as_u16();
        Some((status, response.body_mut().read_to_string().ok()?))
    })
    .await
    .unwrap()
}

/// `GET http://<addr><path>`: the status and the response's headers, by
/// lowercase name.
pub async fn http_headers(
    addr: &str,
    path: &str,
) -> (u16, std::collections::HashMap<String, String>) {
    let url = format!("http://{addr}{path}");
    tokio::task::spawn_blocking(move || {
        let agent = agent();
        let response = agent.get(&url).call().expect("the page answers");
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        (response.status().as_u16(), headers)
    })
    .await
    .unwrap()
}

/// `GET http://<addr><path>` without following a redirect: the status and
/// where it points (`Location`), if anywhere.
pub async fn http_redirect(addr: &str, path: &str) -> (u16, Option<String>) {
    let url = format!("http://{addr}{path}");
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .new_agent();
        let response = agent.get(&url).call().expect("the page answers");
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        (response.status().as_u16(), location)
    })
    .await
    .unwrap()
}

/// Polls `path` until its status is `status`; returns the body.
pub async fn until_status(addr: &str, path: &str, status: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = http_get(addr, path).await;
        if let Some((s, body)) = &answer
            && *s == status
        {
            return body.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{path} never answered {status}: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `POST http://<addr><path>` with a JSON body: the status and the body's bytes.
/// `http_post` where the server may refuse the body before reading it whole:
/// it answers (413) and closes, and the client, still writing, may see the
/// connection reset instead of the answer. `Err` is that I/O error.
pub async fn http_post_refusable(addr: &str, path: &str, body: Vec<u8>) -> Result<u16, String> {
    let url = format!("http://{addr}{path}");
    tokio::task::spawn_blocking(move || {
        agent()
            .post(&url)
            .header("content-type", "application/json")
            .send(&body[..])
            .map(|response| response.status().as_u16())
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap()
}

pub async fn http_post(addr: &str, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let url = format!("http://{addr}{path}");
    tokio::task::spawn_blocking(move || {
        let agent = agent();
        let mut response = agent
            .post(&url)
            .header("content-type", "application/json")
            .send(&body[..])
            .unwrap();
        let status = response.status().as_u16();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_vec()
            .unwrap();
        (status, bytes)
    })
    .await
    .unwrap()
}
