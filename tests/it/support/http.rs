//! The processor's HTTP side as a client sees it.

use std::time::{Duration, Instant};

/// `GET http://<addr><path>`: the status and body (a 503 is an answer, not an error).
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let url = format!("http://{addr}{path}");
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .new_agent();
        let mut response = agent.get(&url).call().ok()?;
        let status = response.status().as_u16();
        Some((status, response.body_mut().read_to_string().ok()?))
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
