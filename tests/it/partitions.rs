//! The broker's own partitioning, which partitioned ownership is to be built on
//! (docs/ARCHITECTURE.md, "Past one processor"): a subject mapping with
//! `partition(n, 1)` on the session id token puts each session's subjects in the
//! partition `paddock::protocol::subjects::partition` computes. Held to both
//! supported servers (CI runs this on 2.9 and the current release).

use std::time::Duration;

use futures::StreamExt;
use paddock::SessionId;
use paddock::protocol::subjects;

use crate::support::*;

#[tokio::test]
async fn the_broker_maps_each_session_to_the_partition_paddock_computes() {
    let dir = fresh_dir("partitions");
    let config = dir.join("partitions.conf");
    std::fs::write(
        &config,
        r#"mappings = {
  "session.*.telemetry": "session.{{wildcard(1)}}.telemetry.{{partition(4,1)}}"
  "sessions.get.*": "sessions.get.{{wildcard(1)}}.{{partition(4,1)}}"
}
"#,
    )
    .unwrap();
    let server = NatsServer::start_with(&["-c", config.to_str().unwrap()]);
    let client = connect(&server.url()).await;
    let mut data = client.subscribe("session.*.telemetry.*").await.unwrap();
    let mut gets = client.subscribe("sessions.get.*.*").await.unwrap();
    sync(&client).await;

    let ids: Vec<SessionId> = (0..200).map(|_| SessionId::new_v4()).collect();
    for id in &ids {
        client
            .publish(
                subjects::data(id, subjects::DataKind::Telemetry),
                "{}".into(),
            )
            .await
            .unwrap();
        client
            .publish(subjects::get_one(id), "".into())
            .await
            .unwrap();
    }
    let mut seen = [0usize; 4];
    for id in &ids {
        let want = subjects::partition(id, 4);
        for sub in [&mut data, &mut gets] {
            let message = tokio::time::timeout(Duration::from_secs(5), sub.next())
                .await
                .expect("a mapped message")
                .unwrap();
            let (head, token) = message.subject.rsplit_once('.').unwrap();
            assert!(head.contains(&id.to_string()), "{}", message.subject);
            assert_eq!(token, want.to_string(), "{}", message.subject);
        }
        seen[want as usize] += 1;
    }
    // Every partition gets some of 200 random sessions.
    assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
}
