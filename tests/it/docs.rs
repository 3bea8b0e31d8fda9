//! docs/PROTOCOL.md's examples are captures: each block marked
//! `<!-- capture: <name> -->` is what this scenario gets from the binary, written
//! in `nats` CLI form. Re-capture them after a change to the contract with
//!
//! ```console
//! cargo test --test it docs::capture -- --ignored
//! ```
//!
//! which rewrites those blocks in place. The default suite checks that every
//! marked block has the shape the binary answers with today — the keys of every
//! JSON object, in the binary's order, and the error codes — so a reply that
//! changes fails CI until the docs are re-captured. Ids, times and counters
//! differ from run to run and are not compared.

use std::time::Duration;

use futures::StreamExt;
use paddock::protocol::payload::Pointer;

use crate::support::*;

const PROTOCOL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "rewrites docs/PROTOCOL.md: run by hand after a contract change"]
async fn capture() {
    let doc = std::fs::read_to_string(PROTOCOL).unwrap();
    let mut rewritten = doc.clone();
    for (name, block) in scenario().await {
        rewritten = replace_block(&rewritten, name, &block);
    }
    std::fs::write(PROTOCOL, rewritten).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_examples_have_the_binarys_shape() {
    let doc = std::fs::read_to_string(PROTOCOL).unwrap();
    for (name, block) in scenario().await {
        let documented = block_of(&doc, name)
            .unwrap_or_else(|| panic!("docs/PROTOCOL.md has no block marked capture: {name}"));
        assert_eq!(
            shape(&documented),
            shape(&block),
            "docs/PROTOCOL.md's '{name}' example differs from what the binary answers \
             (re-capture: cargo test --test it docs::capture -- --ignored):\n{block}"
        );
    }
}

/// Requests in `nats` CLI form with their replies.
struct Console {
    nats: async_nats::Client,
    text: String,
}

impl Console {
    fn new(nats: &async_nats::Client) -> Self {
        Console {
            nats: nats.clone(),
            text: String::new(),
        }
    }

    /// `$ nats req <subject> <shown>` and its reply, members named in
    /// `cut` shown as `{…}` / `[…]`.
    async fn req(&mut self, subject: &str, body: &str, shown: &str, cut: &[&str]) {
        let reply = self
            .nats
            .request(subject.to_string(), body.to_string().into())
            .await
            .unwrap();
        // A blank line between exchanges, not after a command without output.
        let after_command = self
            .text
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("$ "));
        if !self.text.is_empty() && !after_command {
            self.text.push('\n');
        }
        let quoted = if subject.contains('$') {
            format!("'{subject}'")
        } else {
            subject.to_string()
        };
        self.text
            .push_str(&format!("$ nats req {quoted} {shown}\n"));
        if let Some(headers) = &reply.headers {
            for name in ["Nats-Service-Error-Code", "Nats-Service-Error"] {
                if let Some(value) = headers.get(name) {
                    self.text.push_str(&format!("{name}: {value}\n"));
                }
            }
        }
        let body = std::str::from_utf8(&reply.payload).unwrap();
        self.text.push_str(&abbreviate(body, cut));
        self.text.push('\n');
    }

    fn line(&mut self, line: &str) {
        if !self.text.is_empty() && line.starts_with('$') {
            self.text.push('\n');
        }
        self.text.push_str(line);
        self.text.push('\n');
    }

    fn take(&mut self) -> String {
        std::mem::take(&mut self.text)
    }
}

/// `'<body>'` as a shell would be given it.
fn quoted(body: &str) -> String {
    format!("'{body}'")
}

/// The members at `cut` (JSON pointers) replaced by `{…}` or `[…]`.
fn abbreviate(body: &str, cut: &[&str]) -> String {
    let mut text = body.to_string();
    for pointer in cut {
        let pointer = Pointer::parse(pointer).unwrap();
        if let Some(range) = pointer.find(text.as_bytes()) {
            let with = match text.as_bytes()[range.start] {
                b'[' => "[…]",
                b'{' => "{…}",
                _ => continue,
            };
            text.replace_range(range, with);
        }
    }
    text
}

/// Every documented example, in the order the document shows them.
async fn scenario() -> Vec<(&'static str, String)> {
    let server = NatsServer::start();
    let url = server.url();
    let _processor = serve_binary(&url, &[]);
    let nats = connect(&url).await;
    wait_for_processors(&nats, 1).await;
    let mut c = Console::new(&nats);
    let mut blocks = Vec::new();

    c.req("sessions.create", "{}", &quoted("{}"), &[]).await;
    blocks.push(("create", c.take()));
    let id = create(&nats).await;

    let setup = include_str!("../data/setup.json");
    c.req(
        &format!("session.{id}.setup"),
        setup,
        "\"$(cat tests/data/setup.json)\"",
        &[],
    )
    .await;
    c.req(
        &format!("session.{id}.setup"),
        "{\"wing\": ",
        &quoted("{\"wing\": "),
        &[],
    )
    .await;
    blocks.push(("setup", c.take()));
    nats.publish(format!("session.{id}.telemetry"), TELEMETRY.into())
        .await
        .unwrap();

    let body = format!("{{\"session_id\": \"{id}\"}}");
    c.req(
        "sessions.get",
        &body,
        &quoted(&body),
        &["/setup", "/telemetry", "/stats"],
    )
    .await;
    blocks.push(("get", c.take()));
    c.req("sessions.list", "{}", &quoted("{}"), &[]).await;
    blocks.push(("list", c.take()));
    c.req("sessions.stats", "", "''", &[]).await;
    blocks.push(("stats", c.take()));

    let nope = "{\"session_id\": \"nope\"}";
    c.req("sessions.get", nope, &quoted(nope), &[]).await;
    let unknown = "{\"session_id\": \"00000000-0000-4000-8000-000000000000\"}";
    c.req("sessions.get", unknown, &quoted(unknown), &[]).await;
    blocks.push(("errors", c.take()));

    // Lap history: three laps of three frames each into a session of its own.
    let laps_id = create(&nats).await;
    let mut announced = nats
        .subscribe(format!("session.{laps_id}.lap"))
        .await
        .unwrap();
    for lap in 1..=3u32 {
        for lap_time in [0.0_f64, 70.0, 140.2] {
            let fuel = 60.0 - f64::from(lap - 1) * 1.2 - lap_time / 175.0;
            let last = (lap > 1).then(|| 213.913 + f64::from(lap - 1));
            // Written by hand: a sim's field order, which the records keep.
            let last = last.map_or("null".to_string(), |t| format!("{t:.3}"));
            let frame = format!(
                "{{\"lap\":{lap},\"lap_time\":{lap_time:.1},\"fuel\":{:.1},\"last_lap_time\":{last}}}",
                (fuel * 10.0_f64).round() / 10.0
            );
            nats.publish(format!("session.{laps_id}.telemetry"), frame.into())
                .await
                .unwrap();
        }
    }
    let first = tokio::time::timeout(PATIENCE, announced.next())
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(PATIENCE, announced.next())
        .await
        .unwrap();
    let page = "{\"from_lap\": 2, \"limit\": 1}";
    c.req(
        &format!("sessions.laps.{laps_id}"),
        page,
        &quoted(page),
        &[],
    )
    .await;
    c.line(&format!("$ nats sub 'session.{laps_id}.lap'"));
    c.line(std::str::from_utf8(&first.payload).unwrap());
    c.line("{\"lap\":2,…}");
    let zero = "{\"limit\": 0}";
    c.req(
        &format!("sessions.laps.{laps_id}"),
        zero,
        &quoted(zero),
        &[],
    )
    .await;
    blocks.push(("laps", c.take()));

    c.req("sessions.delete", &body, &quoted(&body), &["/session"])
        .await;
    blocks.push(("delete", c.take()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.req("sessions.archive.list", "{}", &quoted("{}"), &[])
        .await;
    c.req("sessions.archive.get", &body, &quoted(&body), &["/session"])
        .await;
    blocks.push(("archive", c.take()));

    c.line("$ nats micro ls");
    c.req("$SRV.PING.sessions", "", "''", &[]).await;
    c.req("$SRV.INFO.sessions", "", "''", &["/endpoints"]).await;
    blocks.push(("discovery", c.take()));
    blocks
}

/// The marked block's text (between its fences, indentation removed).
fn block_of(doc: &str, name: &str) -> Option<String> {
    let (start, end, indent) = block_range(doc, name)?;
    Some(
        doc[start..end]
            .lines()
            .map(|l| l.strip_prefix(indent.as_str()).unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// Where the body of the block marked `name` is, and its fence's indentation.
fn block_range(doc: &str, name: &str) -> Option<(usize, usize, String)> {
    let marker = format!("<!-- capture: {name} -->\n");
    let after = doc.find(&marker)? + marker.len();
    let fence_line_end = after + doc[after..].find('\n')?;
    let fence = &doc[after..fence_line_end];
    let indent = fence[..fence.find("```")?].to_string();
    let start = fence_line_end + 1;
    let close = format!("\n{indent}```");
    let end = start + doc[start..].find(&close)?;
    Some((start, end, indent))
}

fn replace_block(doc: &str, name: &str, block: &str) -> String {
    let (start, end, indent) =
        block_range(doc, name).unwrap_or_else(|| panic!("no block marked capture: {name}"));
    let body: Vec<String> = block
        .trim_end()
        .lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{indent}{l}")
            }
        })
        .collect();
    format!("{}{}{}", &doc[..start], body.join("\n"), &doc[end..])
}

/// What is compared: each command's verb and subject kind, each error code, and
/// the keys (in order, recursively) of every JSON line.
fn shape(block: &str) -> Vec<String> {
    block
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            if let Some(command) = line.strip_prefix("$ ") {
                let words: Vec<&str> = command.split_whitespace().take(3).collect();
                let subject = words
                    .get(2)
                    .map_or("", |s| s.split('.').next().unwrap_or(""));
                Some(format!(
                    "$ {} {} {subject}",
                    words[0],
                    words.get(1).unwrap_or(&"")
                ))
            } else if line.starts_with("Nats-Service-Error-Code") {
                Some(line.to_string())
            } else if line.starts_with('{') {
                let text = line.replace("{…}", "null").replace("[…]", "null");
                let text = text.replace(",…}", "}");
                Some(keys(&text))
            } else {
                None
            }
        })
        .collect()
}

/// The keys of a JSON text, in order, recursively; scalars as `_`.
fn keys(text: &str) -> String {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    struct Shape(String);
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Shape;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
            let mut out = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                let value: Shape = map.next_value_seed(Seed)?;
                out.push(format!("{key}:{}", value.0));
            }
            Ok(Shape(format!("{{{}}}", out.join(","))))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
            let first: Option<Shape> = seq.next_element_seed(Seed)?;
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Shape(format!("[{}]", first.map_or(String::new(), |s| s.0))))
        }
        fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
            Ok(Shape("_".into()))
        }
        fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
            Ok(Shape("_".into()))
        }
        fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
            Ok(Shape("_".into()))
        }
        fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
            Ok(Shape("_".into()))
        }
        fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
            Ok(Shape("_".into()))
        }
        fn visit_unit<E>(self) -> Result<Shape, E> {
            Ok(Shape("_".into()))
        }
    }
    struct Seed;
    impl<'de> serde::de::DeserializeSeed<'de> for Seed {
        type Value = Shape;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Shape, D::Error> {
            d.deserialize_any(V)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    match de.deserialize_any(V) {
        Ok(shape) => shape.0,
        Err(e) => format!("not JSON ({e}): {text}"),
    }
}
