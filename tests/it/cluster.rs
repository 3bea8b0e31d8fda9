//! The deployment shape of deploy/: a 3-node NATS cluster with replicated JetStream
//! and two processors. One broker node and one processor die mid-stream; no
//! session, setup or final frame is lost.

use std::time::{Duration, Instant};

use crate::support::*;

/// A lap of frames every 10 ms: a stream that spans the faults injected meanwhile.
async fn stream(client: &async_nats::Client, ids: &[String], laps: std::ops::RangeInclusive<u64>) {
    for lap in laps {
        publish_laps(client, ids, lap..=lap).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_broker_node_and_a_processor_loses_nothing() {
    let mut cluster = NatsCluster::start(3).await;
    let urls = cluster.urls();
    // The monitors' connection is to a node that stays up.
    let client = connect(&cluster.nodes[2].url()).await;
    let mut a = Some(serve_binary(&urls, &["--kv-replicas", "3"]));
    wait_for_processors(&client, 1).await;
    let b = serve_binary(&urls, &["--kv-replicas", "3"]);
    wait_for_processors(&client, 2).await;

    let mut ids = Vec::new();
    for n in 0..20 {
        let id = create(&client).await;
        let setup = format!(r#"{{"car": {n}}}"#);
        ask(&client, &format!("session.{id}.setup"), setup)
            .await
            .ok();
        ids.push(id);
    }
    stream(&client, &ids, 1..=50).await;

    cluster.nodes[0].kill();
    stream(&client, &ids, 51..=100).await;
    let mut victim = a.take().unwrap();
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    stream(&client, &ids, 101..=120).await;
    sync(&client).await;

    // The surviving processor has every session, its setup and its final frame.
    let deadline = Instant::now() + PATIENCE;
    for (n, id) in ids.iter().enumerate() {
        loop {
            let doc = ask(&client, "sessions.get", id_body(id)).await.ok();
            assert_eq!(doc["setup"], serde_json::json!({"car": n}), "{id}");
            if doc["telemetry"]["lap"] == 120 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id}: final frame missing: {}",
                doc["telemetry"]["lap"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let stats = ask(&client, "sessions.stats", String::new()).await.ok();
    assert_eq!(stats["live_sessions"], 20);
    assert_eq!(b.stop("-TERM"), 0);
}

/// Losing the node that led a bucket's stream leaves the cluster without a leader
/// for it until it elects one (about 5 s here): KV writes are refused with "no
/// stream found" meanwhile. The processor keeps the changes dirty and retries, so
/// what is stored catches up, and a processor started afterwards recovers every
/// session with its final frame. The node killed is the one that leads the live
/// bucket's stream, found from the stream's cluster info, so the refusals (and
/// the retry path) happen in every run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_state_catches_up_after_a_node_loss() {
    let mut cluster = NatsCluster::start(3).await;
    let urls = cluster.urls();
    // Connected to every node: whichever node is killed, the test's client stays.
    let client = async_nats::ConnectOptions::new()
        .connect(
            urls.split(',')
                .map(|u| u.parse::<async_nats::ServerAddr>().unwrap())
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    let http = format!("127.0.0.1:{}", free_port());
    let a = serve_binary(&urls, &["--kv-replicas", "3", "--http-addr", &http]);
    wait_for_processors(&client, 1).await;
    let ids = sessions_with_setups(&client, 20).await;
    stream(&client, &ids, 1..=50).await;
    let leader = stream_leader(&client, "KV_paddock_sessions").await;
    cluster.nodes[leader].kill();
    stream(&client, &ids, 51..=120).await;
    sync(&client).await;
    // The write-behind met the leaderless stream: refused writes, counted (what
    // this test is about; without them the retry path would not have run).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, metrics) = http_get(&http, "/metrics").await.expect("metrics");
        let failures: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("paddock_storage_write_failures_total "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        if failures > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no storage write was refused while the stream had no leader"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A fresh processor started after the survivor stops recovers every session
    // with its final frame. The lost node comes back first, as an operator would bring it back: a
    // cluster missing a node refuses new consumers for about a minute (NATS 2.9),
    // which a processor starting then waits out (see store.rs), and which would
    // only make this test slow.
    assert_eq!(a.stop("-TERM"), 0);
    cluster.nodes[leader].start_again();
    wait_until_replicas_current(&client).await;
    let c = serve_binary(&urls, &["--kv-replicas", "3"]);
    wait_for_processors(&client, 1).await;
    let mut stale = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let doc = ask(&client, "sessions.get", id_body(id)).await.ok();
        assert_eq!(doc["setup"], serde_json::json!({"car": n}));
        if doc["telemetry"]["lap"] != 120 {
            stale.push((id.clone(), doc["telemetry"]["lap"].clone()));
        }
    }
    if !stale.is_empty() {
        // Tell a stale read from a lost write: what does the bucket hold now?
        let js = async_nats::jetstream::new(client.clone());
        let kv = js.get_key_value("paddock_sessions").await.unwrap();
        let mut stored = Vec::new();
        for (id, _) in &stale {
            let value = kv.get(id).await.unwrap().unwrap_or_default();
            let doc: serde_json::Value = serde_json::from_slice(&value).unwrap_or_default();
            stored.push(doc["telemetry"]["lap"].clone());
        }
        panic!(
            "{} sessions recovered with an old frame: {stale:?}; the bucket holds {stored:?}",
            stale.len()
        );
    }
    assert_eq!(c.stop("-TERM"), 0);
}

/// Waits until every replica of paddock's buckets has caught up, so the node that
/// came back serves no stale copy.
async fn wait_until_replicas_current(client: &async_nats::Client) {
    let js = async_nats::jetstream::new(client.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    for stream in ["KV_paddock_sessions", "KV_paddock_sessions_archive"] {
        loop {
            let current = match js.get_stream(stream).await {
                Ok(mut s) => match s.info().await {
                    Ok(info) => info.cluster.as_ref().is_some_and(|c| {
                        c.leader.is_some()
                            && c.replicas.len() == 2
                            && c.replicas
                                .iter()
                                .all(|p| p.current && !p.offline && p.lag.unwrap_or(0) == 0)
                    }),
                    Err(_) => false,
                },
                Err(_) => false,
            };
            if current {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{stream}: replicas never caught up"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Which node (`n<i>` in the harness's cluster) leads `stream`.
async fn stream_leader(client: &async_nats::Client, stream: &str) -> usize {
    let info = stream_info(client, stream).await;
    let leader = info
        .cluster
        .and_then(|c| c.leader)
        .expect("a replicated stream has a leader");
    leader
        .strip_prefix('n')
        .and_then(|i| i.parse().ok())
        .unwrap_or_else(|| panic!("leader {leader:?} is not a harness node"))
}
