//! Several real `sextant serve` processes on one etcd prefix, as a cluster runs: TTL heartbeats
//! through any server, each HTTP check probed by one server and taken over when it dies, etcd
//! lost and back with nothing acknowledged lost (check results found meanwhile held, then
//! written), and one server partitioned from etcd (in a
//! network namespace of the test's own) serving stale answers until it catches up past a
//! compaction.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::dns::{addresses, extended_errors, query_message, udp, udp_message};
use common::endpoint::HttpEndpoint;
use common::etcd::EtcdCluster;
use common::netns::Netns;
use common::on_etcd::{TOKEN, answers, client, kill_9, register, register_at, start_named, start_named_with};
use common::process::{Running, signal, start_command};
use common::{ip, repo_zones, temp_data_dir, wait_for};
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

/// EDE info-code 3 (RFC 8914).
const STALE_ANSWER: u16 = 3;

async fn put(server: &Running, path: &str, body: Option<&Value>) -> (reqwest::StatusCode, String) {
    let mut request = client().put(format!("http://{}{path}", server.http));
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("HTTP PUT");
    (response.status(), response.text().await.unwrap_or_default())
}

/// What a read says of its freshness: `X-Consul-KnownLeader` and `X-Consul-LastContact`.
async fn freshness(server: &Running) -> (String, u64) {
    let response = client()
        .get(format!("http://{}/v1/catalog/services", server.http))
        .send()
        .await
        .expect("HTTP GET");
    let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
    (
        header("x-consul-knownleader"),
        header("x-consul-lastcontact").parse().unwrap(),
    )
}

async fn leader(server: &Running) -> String {
    let response = client()
        .get(format!("http://{}/v1/status/leader", server.http))
        .send()
        .await
        .expect("HTTP GET");
    response.json().await.unwrap()
}

/// An A query with EDNS: the addresses answered and the Extended DNS Errors carried.
async fn ask(server: &Running, name: &str) -> (Vec<std::net::IpAddr>, Vec<u16>) {
    let reply = udp_message(server.dns, &query_message(name, RecordType::A, Some(1232))).await;
    (addresses(&reply), extended_errors(&reply))
}

/// The log lines a server wrote since last asked.
fn log_lines(server: &Running) -> Vec<String> {
    server.log.try_iter().collect()
}

#[tokio::test]
async fn a_heartbeat_to_any_server_counts_and_a_silent_check_turns_critical_once() {
    let cluster = EtcdCluster::start(3);
    let a = start_named(&cluster, "/ttl/", "sextant-a");
    let b = start_named(&cluster, "/ttl/", "sextant-b");
    let body = json!({"Name": "beat", "ID": "beat-1", "Address": "10.5.0.1", "Port": 80,
                      "Check": {"CheckID": "beat-ttl", "TTL": "2s", "Status": "passing"}});
    let (code, text) = put(&a, "/v1/agent/service/register", Some(&body)).await;
    assert_eq!(code, 200, "{text}");
    // Registered through A, heartbeaten through B only, for three TTLs: passing everywhere.
    let mut last_beat = Instant::now();
    for _ in 0..12 {
        last_beat = Instant::now();
        let (code, text) = put(&b, "/v1/agent/check/pass/beat-ttl", None).await;
        assert_eq!(code, 200, "{text}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        for server in [&a, &b] {
            assert_eq!(ask(server, "beat.service.trading-dc.").await.0, [ip("10.5.0.1")]);
        }
    }
    // Silence: critical once no heartbeat renewed the check's lease for its TTL, on both.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ask(&a, "beat.service.trading-dc.").await.0.is_empty() {
        assert!(Instant::now() < deadline, "the silent check never turned critical");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let expired_after = last_beat.elapsed();
    println!("TTL 2s, heartbeats through another server: critical {expired_after:?} after the last one");
    assert!(
        expired_after >= Duration::from_secs(2),
        "never early: {expired_after:?}"
    );
    wait_for("critical on B too", async || {
        ask(&b, "beat.service.trading-dc.").await.0.is_empty()
    })
    .await;
    // One server (the check's owner) wrote the transition; the other only applied it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let transitions: Vec<String> = [&a, &b]
        .iter()
        .flat_map(|s| log_lines(s))
        .filter(|l| l.contains("check status changed") && l.contains("beat-ttl") && l.contains("critical"))
        .collect();
    assert_eq!(
        transitions.len(),
        1,
        "turned critical once, cluster-wide: {transitions:#?}"
    );
}

#[tokio::test]
async fn an_http_check_runs_on_one_server_and_moves_when_its_server_dies() {
    let endpoint = HttpEndpoint::start(200).await;
    let cluster = EtcdCluster::start(3);
    // A short lease, so that a dead server's checks move soon.
    let lease = ["--etcd-lease-ttl", "3s"];
    let a = start_named_with(&cluster, "/probe/", "sextant-a", &lease);
    let b = start_named_with(&cluster, "/probe/", "sextant-b", &lease);
    let body = json!({"Name": "web", "ID": "web-1", "Address": "10.6.0.1", "Port": 80,
                      "Check": {"CheckID": "web-http", "HTTP": endpoint.url("/health"), "Interval": "1s"}});
    let (code, text) = put(&a, "/v1/agent/service/register", Some(&body)).await;
    assert_eq!(code, 200, "{text}");
    wait_for("first probes", async || endpoint.hits() >= 1).await;
    // One server probes (Consul's shortest interval is 1 s): about five probes in five seconds,
    // not ten.
    let before = endpoint.hits();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let probes = endpoint.hits() - before;
    assert!(
        (4..=7).contains(&probes),
        "{probes} probes in 5 s at 1 s: one server probes"
    );
    // Which one: pause A for less than its lease (nobody takes over meanwhile); if the probes
    // stop, A runs the check.
    signal(&a, "-STOP");
    let before = endpoint.hits();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let while_paused = endpoint.hits() - before;
    signal(&a, "-CONT");
    let (owner, survivor) = if while_paused == 0 { (a, b) } else { (b, a) };
    // Its owner killed: the other server probes within one lease TTL.
    let killed_at = Instant::now();
    kill_9(owner);
    let before = endpoint.hits();
    let deadline = killed_at + Duration::from_secs(20);
    while endpoint.hits() <= before + 1 {
        assert!(Instant::now() < deadline, "nobody took the check over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failover = killed_at.elapsed();
    println!("kill -9 of a check's owner -> probed by another server after {failover:?}");
    // Within the lease TTL (3 s), plus the 1 s interval a probe may wait, plus slack.
    assert!(
        failover < Duration::from_secs(6),
        "taken over within the lease TTL: {failover:?}"
    );
    // And the survivor acts on what it probes: a failing instance leaves its answers.
    assert_eq!(ask(&survivor, "web.service.trading-dc.").await.0, [ip("10.6.0.1")]);
    endpoint.set_status(500);
    wait_for("the failing instance leaves DNS", async || {
        ask(&survivor, "web.service.trading-dc.").await.0.is_empty()
    })
    .await;
}

#[tokio::test]
async fn losing_etcd_leaves_dns_answering_stale_and_loses_nothing_acknowledged() {
    let mut cluster = EtcdCluster::start(3);
    let endpoint = HttpEndpoint::start(200).await;
    let a = start_named(&cluster, "/outage/", "sextant-a");
    let b = start_named(&cluster, "/outage/", "sextant-b");
    assert_eq!(register(&a, 0).await.0, 200);
    let probed = json!({"Name": "probed", "ID": "probed-1", "Address": "10.6.1.1", "Port": 80,
                        "Check": {"CheckID": "probed-http", "HTTP": endpoint.url("/"), "Interval": "1s"}});
    assert_eq!(put(&a, "/v1/agent/service/register", Some(&probed)).await.0, 200);
    wait_for("the probed instance passing", async || {
        ask(&b, "probed.service.trading-dc.").await.0 == [ip("10.6.1.1")]
    })
    .await;
    // 1,000 registrations through A and B in turn, by four clients, across the outage.
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..4)
        .map(|k| {
            let (a, b, outcomes) = (a.http, b.http, outcomes.clone());
            tokio::spawn(async move {
                for i in (1..=1000).skip(k).step_by(4) {
                    let server = if i % 2 == 0 { a } else { b };
                    let (code, body) = register_at(server, i).await;
                    assert!(code == 200 || code == 503, "{code} {body}");
                    outcomes.lock().unwrap().push((i, code == 200));
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for member in 0..3 {
        cluster.kill_member(member);
    }
    // Every server keeps answering, and says its answers are stale.
    wait_for("B knows etcd is gone", async || freshness(&b).await.0 == "false").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (known, last_contact) = freshness(&b).await;
    assert_eq!(known, "false");
    assert!(last_contact > 0, "LastContact {last_contact}");
    assert_eq!(leader(&b).await, "", "no leader while etcd is out of reach");
    wait_for("A knows etcd is gone", async || freshness(&a).await.0 == "false").await;
    let (addresses, errors) = ask(&a, "svc-0.service.trading-dc.").await;
    assert_eq!(addresses, [ip("10.7.0.1")], "answered from the last registry seen");
    assert_eq!(errors, [STALE_ANSWER], "and said to be stale");
    let (code, body) = register(&b, 5000).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("etcd"), "the refusal names etcd: {body}");
    // Checks go on: a failure found now is held, not lost.
    endpoint.set_status(500);
    let probes = endpoint.hits();
    wait_for("probed during the outage", async || endpoint.hits() >= probes + 2).await;
    // etcd back: writes taken again, staleness gone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for member in 0..3 {
        cluster.start_member(member);
    }
    cluster.wait_healthy();
    for writer in writers {
        writer.await.unwrap();
    }
    wait_for("A fresh again", async || freshness(&a).await.0 == "true").await;
    wait_for("the failure found during the outage written, and served", async || {
        ask(&a, "probed.service.trading-dc.").await.0.is_empty()
            && ask(&b, "probed.service.trading-dc.").await.0.is_empty()
    })
    .await;
    let log: Vec<String> = [&a, &b].iter().flat_map(|s| log_lines(s)).collect();
    assert!(
        log.iter()
            .any(|l| l.contains("check results held while etcd was out of reach")),
        "the result was held and written when etcd came back: {log:#?}"
    );
    assert!(ask(&a, "svc-0.service.trading-dc.").await.1.is_empty());
    assert_ne!(leader(&a).await, "");
    // Nothing acknowledged lost: on both servers, and on a third that loads what etcd holds.
    let outcomes = outcomes.lock().unwrap().clone();
    let acknowledged: Vec<usize> = outcomes.iter().filter(|(_, ok)| *ok).map(|(i, _)| *i).collect();
    let refused = outcomes.len() - acknowledged.len();
    println!(
        "1,000 registrations across an etcd outage: {} acknowledged, {refused} refused",
        acknowledged.len()
    );
    assert!(
        refused > 0 && !acknowledged.is_empty(),
        "the outage fell within the run"
    );
    let c = start_named(&cluster, "/outage/", "sextant-c");
    for server in [&a, &b, &c] {
        for &i in &acknowledged {
            wait_for(&format!("svc-{i} served"), async || answers(server, i).await).await;
        }
    }
}

#[tokio::test]
async fn a_server_cut_off_from_etcd_serves_stale_answers_then_catches_up_past_a_compaction() {
    let netns = Netns::create();
    let cluster = EtcdCluster::start_also_on(3, netns.etcd_side);
    // A lease shorter than the partition: B's runs out, and B takes a new one once back.
    let a = start_named_with(&cluster, "/partition/", "sextant-a", &["--etcd-lease-ttl", "3s"]);
    let endpoints = cluster.endpoints_on(netns.etcd_side);
    let b = start_command(
        netns.command(std::path::Path::new(env!("CARGO_BIN_EXE_sextant"))),
        netns.inside,
        &repo_zones(),
        &temp_data_dir(),
        &[
            "--etcd",
            &endpoints,
            "--etcd-prefix",
            "/partition/",
            "--node-name",
            "sextant-b",
            "--etcd-lease-ttl",
            "3s",
            // The test is another host to it: writes need a token.
            "--acl-token",
            TOKEN,
        ],
    );
    assert_eq!(register(&a, 1).await.0, 200);
    let kv_put = async |key: &str| {
        let url = format!("http://{}/v1/kv/{key}", a.http);
        client().put(url).body("v").send().await.unwrap().status()
    };
    assert_eq!(kv_put("cfg/old").await, 200);
    wait_for("B serves what A took", async || answers(&b, 1).await).await;
    netns.cut();
    let mut log = Vec::new();
    // B: the last registry it saw, said to be stale; A carries on.
    wait_for("B knows it is cut off", async || freshness(&b).await.0 == "false").await;
    let (addresses, errors) = ask(&b, "svc-1.service.trading-dc.").await;
    assert_eq!((addresses, errors), (vec![ip("10.7.0.2")], vec![STALE_ANSWER]));
    assert_eq!(freshness(&a).await.0, "true");
    assert_eq!(register(&a, 2).await.0, 200);
    let (code, body) = put(&a, "/v1/agent/service/deregister/svc-1", None).await;
    assert_eq!(code, 200, "{body}");
    // Key/value changes and an external node B misses too.
    let external = client()
        .put(format!("http://{}/v1/catalog/register", a.http))
        .json(&json!({"Node": "ext-p", "Address": "10.9.9.1", "Service": {"Service": "far", "Port": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(external.status(), 200);
    assert_eq!(kv_put("cfg/new").await, 200);
    let deleted = client()
        .delete(format!("http://{}/v1/kv/cfg/old", a.http))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let (code, body) = register(&b, 3).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("etcd"), "{body}");
    assert!(!answers(&b, 2).await, "a partitioned server cannot know");
    // B's watch gives up on the silent connection; etcd forgets the history B would resume
    // from; the link heals; B reads everything again.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !log.iter().any(|l: &String| l.contains("the etcd watch broke")) {
        assert!(
            Instant::now() < deadline,
            "B's watch never noticed the partition: {log:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        log.extend(log_lines(&b));
    }
    cluster.compact();
    netns.heal();
    wait_for("B caught up", async || {
        answers(&b, 2).await
            && udp(b.dns, "svc-1.service.trading-dc.", RecordType::A)
                .await
                .answers
                .is_empty()
    })
    .await;
    log.extend(log_lines(&b));
    assert!(
        log.iter().any(|l| l.contains("lost its place")),
        "B read the registry again after the compaction: {log:#?}"
    );
    // Its key/value entries were read again with the registry.
    let keys: Value = client()
        .get(format!("http://{}/v1/kv/cfg/?keys", b.http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(keys, json!(["cfg/new"]));
    let far = udp(b.dns, "far.service.trading-dc.", RecordType::A).await;
    assert_eq!(
        common::dns::addresses(&far),
        [ip("10.9.9.1")],
        "the external node read again with the registry"
    );
    wait_for("B fresh again", async || freshness(&b).await.0 == "true").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.iter().any(|l| l.contains("lease in etcd had run out; taken again")) {
        assert!(Instant::now() < deadline, "B took a new lease: {log:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        log.extend(log_lines(&b));
    }
    assert_eq!(register(&b, 3).await.0, 200);
    wait_for("A serves what B took", async || answers(&a, 3).await).await;
}
