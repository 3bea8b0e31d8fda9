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

/// Each processor's owned partitions (its `$SRV.INFO` metadata) and live
/// sessions (its `$SRV.STATS` counters), joined by instance id, sorted.
async fn holdings(client: &async_nats::Client, processors: usize) -> Vec<(String, u64)> {
    let infos = each_processor(client, "$SRV.INFO.sessions", processors).await;
    let stats = each_processor(client, "$SRV.STATS.sessions", processors).await;
    let mut held: Vec<(String, u64)> = infos
        .iter()
        .map(|info| {
            let stat = stats.iter().find(|s| s["id"] == info["id"]).expect("stats");
            let live = stat["endpoints"][0]["data"]["live_sessions"]
                .as_u64()
                .expect("live_sessions");
            let owns = info["metadata"]["owns"].as_str().expect("owns").to_string();
            (owns, live)
        })
        .collect();
    held.sort();
    held
}

/// Partitioned ownership on a 3-node cluster: 4 partitions, a processor owning
/// each, and a replica of partition 2. Sessions spread evenly; every processor
/// holds exactly its partition's; every answer (body and id forms, list pages,
/// stats, frames) is what one processor would give; killing partition 2's
/// processor with -9 leaves its replica answering; a partition nobody owns gets
/// a clear 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processors_own_a_partition_each_and_answer_for_all() {
    let cluster = NatsCluster::start_with(3, Some(paddock::broker::mappings_config(4))).await;
    let urls = cluster.urls();
    let client = connect(&cluster.nodes[1].url()).await;
    let serve = |owns: &str| {
        serve_binary(
            &urls,
            &["--kv-replicas", "3", "--partitions", "4", "--owns", owns],
        )
    };
    // The first creates the buckets; the rest open them.
    let mut processors = vec![serve("0")];
    wait_for_processors(&client, 1).await;
    processors.extend(["1", "2", "3", "2"].map(serve));
    wait_for_processors(&client, 5).await;

    let mut ids = sessions_with_setups(&client, 80).await;
    let partition_of = |id: &str| subjects::partition(&SessionId::parse(id).unwrap(), 4);
    let mut per_partition = [0u64; 4];
    for id in &ids {
        per_partition[partition_of(id) as usize] += 1;
    }
    // Even: a quarter each (20 of 80) give or take chance; never one empty.
    // The count is binomial (80, 1/4): standard deviation 3.9, so 5..=40 is
    // five deviations either way (8..=32 failed once in CI, with 34).
    assert!(
        per_partition.iter().all(|&n| (5..=40).contains(&n)),
        "{per_partition:?}"
    );
    publish_laps(&client, &ids, 1..=5).await;
    sync(&client).await;

    // Each processor holds its partition's sessions and no other.
    let held = holdings(&client, 5).await;
    let expect: Vec<(String, u64)> = [0, 1, 2, 2, 3]
        .map(|p| (p.to_string(), per_partition[p]))
        .to_vec();
    assert_eq!(held, expect);

    // Body and id forms, from any processor, see the session's owner's state.
    for (n, id) in ids.iter().enumerate() {
        // The id form first: it takes the frames' path to the owner, so it sees
        // them all; the body form is forwarded after it.
        let by_subject = ask(&client, &format!("sessions.get.{id}"), String::new())
            .await
            .ok();
        let by_body = ask(&client, "sessions.get", id_body(id)).await.ok();
        for doc in [by_subject, by_body] {
            assert_eq!(doc["setup"], serde_json::json!({"car": n}), "{id}");
            assert_eq!(doc["telemetry"]["lap"], 5, "{id}");
        }
        // Laps 1-4 completed (lap 5 is running), whichever processor answers.
        let laps = ask(&client, &format!("sessions.laps.{id}"), String::new())
            .await
            .ok();
        assert_eq!(laps["count"], 4, "{id}: {laps}");
        let numbers: Vec<u64> = laps["laps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["lap"].as_u64().unwrap())
            .collect();
        assert_eq!(numbers, [1, 2, 3, 4], "{id}");
    }
    let unknown = SessionId::new_v4().to_string();
    ask(&client, "sessions.get", id_body(&unknown))
        .await
        .expect_error(404);
    ask(&client, "sessions.get", "{".into())
        .await
        .expect_error(400);

    // list: every session once, oldest first, in pages across partitions.
    let mut listed = Vec::new();
    let mut offset = 0;
    loop {
        let body = format!(r#"{{"limit": 7, "offset": {offset}}}"#);
        let page = ask(&client, "sessions.list", body).await.ok();
        assert_eq!(page["total"], 80);
        for row in page["sessions"].as_array().unwrap() {
            listed.push((
                row["created_at"].as_str().unwrap().to_string(),
                row["session_id"].as_str().unwrap().to_string(),
            ));
        }
        match page["next_offset"].as_u64() {
            Some(next) => offset = next,
            None => break,
        }
    }
    assert!(listed.is_sorted(), "not oldest first");
    let mut listed: Vec<String> = listed.into_iter().map(|(_, id)| id).collect();
    listed.sort();
    let mut all = ids.clone();
    all.sort();
    assert_eq!(listed, all);
    let stats = ask(&client, "sessions.stats", String::new()).await.ok();
    assert_eq!(stats["live_sessions"], 80);
    assert!(
        stats["telemetry_frames"].as_u64().unwrap() >= 400,
        "{stats}"
    );

    // A delete by body goes to the owner; the end is archived and listed.
    let gone = ids.pop().unwrap();
    ask(&client, "sessions.delete", id_body(&gone)).await.ok();
    ask(&client, &format!("sessions.get.{gone}"), String::new())
        .await
        .expect_error(404);
    let archived = ask(&client, "sessions.archive.list", String::new())
        .await
        .ok();
    assert_eq!(archived["total"], 1);
    assert_eq!(archived["sessions"][0]["session_id"], gone.as_str());

    // Partition 2's first processor dies; its replica answers for it.
    let mut victim = processors.remove(2);
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    wait_for_processors_exactly(&client, 4).await;
    for id in ids.iter().filter(|id| partition_of(id) == 2) {
        client
            .publish(format!("session.{id}.telemetry"), frame(6).into())
            .await
            .unwrap();
    }
    sync(&client).await;
    for id in ids.iter().filter(|id| partition_of(id) == 2) {
        let doc = ask(&client, &format!("sessions.get.{id}"), String::new())
            .await
            .ok();
        assert_eq!(doc["telemetry"]["lap"], 6, "{id}");
    }
    let mut created_in = [0; 4];
    for _ in 0..40 {
        created_in[partition_of(&create(&client).await) as usize] += 1;
    }
    assert!(created_in[2] > 0, "{created_in:?}");
    let stats = ask(&client, "sessions.stats", String::new()).await.ok();
    assert_eq!(stats["live_sessions"], 79 + 40);

    // Partition 3 loses its only processor: what needs it is refused, clearly.
    let mut victim = processors.remove(2);
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    wait_for_processors_exactly(&client, 3).await;
    let list = ask(&client, "sessions.list", String::new()).await;
    list.expect_error(503);
    assert!(
        list.reason.as_deref().unwrap_or("").contains("partition 3"),
        "{list:?}"
    );
    // Its own label: a program reading `reason` must not take it for storage.
    assert_eq!(list.body["reason"], "partition_unavailable", "{list:?}");
    let orphan = ids.iter().find(|id| partition_of(id) == 3).unwrap();
    ask(&client, "sessions.get", id_body(orphan))
        .await
        .expect_error(503);
    for mut processor in processors {
        processor.child.kill().unwrap();
        processor.child.wait().unwrap();
    }
}

/// Waits until exactly `n` processors answer the micro PING (one just died).
async fn wait_for_processors_exactly(client: &async_nats::Client, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while paddock::client::processors_answering(client).await.unwrap() != n {
        assert!(std::time::Instant::now() < deadline, "not {n} processors");
    }
}

/// In operator mode the mappings live in the account `auth init --partitions`
/// writes, and per-session credentials keep working through them: a session's
/// monitor and dashboard, allowed only their own session's subjects, reach the
/// processor that owns it (the broker checks permissions on the subject as sent,
/// then maps it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_operator_mode_the_account_partitions_and_session_credentials_still_work() {
    let dir = fresh_dir("auth-partitions");
    let out = dir.to_str().unwrap().to_string();
    let (code, _, stderr) =
        run_paddock(&["auth", "init", "--out", &out, "--partitions", "2"]).await;
    assert_eq!(code, 0, "{stderr}");
    let path = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let server = NatsServer::start_with(&["-c", &path("nats-server.conf")]);
    let url = server.url();
    let processors = [
        serve_issuing(&url, &dir, &["--partitions", "2", "--owns", "0"]),
        serve_issuing(&url, &dir, &["--partitions", "2", "--owns", "1"]),
    ];
    let ops = connect_with_creds(&url, path("ops.creds"), "_INBOX_ops").await;
    wait_for_processors(&ops, 2).await;

    // Three sessions in each partition: ids are random, so six in a row would
    // all land in one partition about one run in 32; keep creating until each
    // partition has three (the others are deleted).
    let mut per_partition = [0usize; 2];
    let mut n = 0;
    while n < 6 {
        let (id, _) = create_with_creator(&url, &dir).await;
        let p = subjects::partition(&SessionId::parse(&id).unwrap(), 2) as usize;
        if per_partition[p] == 3 {
            ask(&ops, "sessions.delete", id_body(&id)).await.ok();
            continue;
        }
        per_partition[p] += 1;
        let inbox = format!("_INBOX_{id}");
        let with =
            |role: &str| connect_with_creds(&url, path(&format!("{id}-{role}.creds")), &inbox);
        let monitor = with("monitor").await;
        let ack = monitor
            .request(
                format!("session.{id}.setup"),
                format!(r#"{{"car": {n}}}"#).into(),
            )
            .await
            .unwrap();
        assert!(ack.headers.is_none(), "{ack:?}");
        let dashboard = with("dashboard").await;
        let doc = Answer::from(
            dashboard
                .request(format!("sessions.get.{id}"), "".into())
                .await
                .unwrap(),
        )
        .ok();
        assert_eq!(doc["setup"]["car"], n, "{doc}");
        n += 1;
    }
    let list = ask(&ops, "sessions.list", String::new()).await.ok();
    assert_eq!(list["total"], 6, "{list}");
    drop(processors);
}

/// A partitioned processor on a broker without the mappings would receive
/// nothing: it refuses to start and says what to add. With the mappings of
/// another partition count it refuses too.
#[tokio::test]
async fn a_partitioned_processor_refuses_a_broker_that_does_not_partition() {
    // `serve --partitions 4` against `url`: its exit code and last line.
    async fn serve_four(url: &str) -> (i32, String) {
        let (code, _, stderr) = run_paddock(&[
            "serve",
            "--nats-url",
            url,
            "--store",
            "memory",
            "--partitions",
            "4",
        ])
        .await;
        (code, stderr.lines().last().unwrap_or_default().to_string())
    }
    let plain = NatsServer::start();
    let (code, last) = serve_four(&plain.url()).await;
    assert_eq!(code, 1, "{last}");
    assert!(
        last.contains("the broker does not split subjects into 4 partitions")
            && last.contains("paddock broker mappings --partitions 4"),
        "{last}"
    );

    let dir = fresh_dir("two-partitions");
    let config = dir.join("mappings.conf");
    std::fs::write(&config, paddock::broker::mappings_config(2)).unwrap();
    let two = NatsServer::start_with(&["-c", config.to_str().unwrap()]);
    let (code, last) = serve_four(&two.url()).await;
    assert_eq!(code, 1, "{last}");
    assert!(last.contains("not in partition"), "{last}");
}

/// The live-following test drives Chromium: in a module named `browser` so that
/// `cargo test -- --skip browser::` leaves it out with the other browser tests
/// (as a missing chromium does, support/needs.rs).
mod browser {
    use std::time::Duration;

    use paddock::SessionId;
    use paddock::protocol::subjects;

    use crate::support::browser::{Chromium, PHONE};
    use crate::support::*;

    /// Partitioned sessions are followed live like any other (docs/ARCHITECTURE.md:
    /// "monitors and dashboards change nothing"): the broker delivers a partitioned
    /// session's frames as `session.<id>.telemetry.<p>`, and a raw `session.<id>.>`
    /// subscriber, `paddock watch --plain` and the page (Chromium) each show a frame
    /// published after they joined; the lap announcement and the end arrive too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_partitioned_session_is_followed_live_by_every_consumer() {
        let Some(chromium) = Chromium::find() else {
            return;
        };
        let server = NatsServer::start_websocket_with(paddock::broker::mappings_config(2));
        let url = server.url();
        let http = format!("127.0.0.1:{}", free_port());
        let ws = server.ws_url();
        let _p0 = serve_binary(
            &url,
            &[
                "--partitions",
                "2",
                "--owns",
                "0",
                "--http-addr",
                &http,
                "--ws-url",
                &ws,
            ],
        );
        let _p1 = serve_binary(&url, &["--partitions", "2", "--owns", "1"]);
        let client = connect(&url).await;
        wait_for_processors(&client, 2).await;
        // One session in each partition: whichever the page's processor owns or not.
        let mut ids = [None, None];
        while ids.iter().any(Option::is_none) {
            let id = create(&client).await;
            let p = subjects::partition(&SessionId::parse(&id).unwrap(), 2) as usize;
            ids[p].get_or_insert(id);
        }
        for (p, id) in ids.iter().map(|id| id.as_ref().unwrap()).enumerate() {
            let publish = |lap: u64| {
                let client = client.clone();
                let subject = format!("session.{id}.telemetry");
                async move {
                    client.publish(subject, frame(lap).into()).await.unwrap();
                    client.flush().await.unwrap();
                }
            };
            publish(1).await;
            let mut raw = client.subscribe(format!("session.{id}.>")).await.unwrap();
            sync(&client).await;
            let watch = Running::spawn(&["watch", id, "--plain", "--nats-url", &url]);
            assert!(watch.line().starts_with("lap 1 "), "partition {p}");
            let browser = chromium.start(PHONE).await;
            browser.open(&format!("http://{http}/session/{id}")).await;
            browser
                .wait_text("[data-f=lap]", "the snapshot's lap", |t| t == "1")
                .await;

            // Live: lap 2 completes lap 1, whose record is announced.
            publish(2).await;
            let first = next(&mut raw).await;
            assert_eq!(
                first.subject.as_str(),
                format!("session.{id}.telemetry.{p}")
            );
            let lap = next(&mut raw).await;
            assert_eq!(lap.subject.as_str(), format!("session.{id}.lap"));
            let lines = watch.lines_for(Duration::from_millis(1500));
            assert!(
                lines.iter().any(|l| l.starts_with("lap 2 ")),
                "partition {p}: watch missed the live frame: {lines:?}"
            );
            browser
                .wait_text("[data-f=lap]", "a live frame", |t| t == "2")
                .await;
            browser
                .wait_text("#laps tbody tr:first-child", "the live lap record", |t| {
                    t.starts_with('1')
                })
                .await;

            // The end: announced on the session's subjects, seen by all three.
            let answer = ask(&client, "sessions.delete", id_body(id)).await;
            answer.ok();
            let event = next(&mut raw).await;
            assert_eq!(
                event.subject.as_str(),
                format!("session.{id}.events.deleted")
            );
            browser
                .wait_text("#problem", "the end", |t| t.contains("deleted"))
                .await;
            assert_eq!(
                watch.exit_code(),
                1,
                "partition {p}: watch goes on after the end"
            );
            browser.close().await;
        }
    }
}
