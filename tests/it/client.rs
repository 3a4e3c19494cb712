//! The client library (`sextant::client`) and the programs in `examples/` against a real server:
//! live views under churn, balancers over real HTTP instances, self-registration through a
//! restart, the folder registrar, the design documents' flow, and the errors a caller sees.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sextant::Config;
use sextant::client::{Client, DnsServer, Error, Registration, Retry, ServiceView, Strategy};

use crate::common::examples::Example;
use crate::common::tools::TempDir;
use crate::common::{TestServer, test_config, wait_for};

const STARTUP: Duration = Duration::from_secs(30);

/// An instance of `examples/self_registering.rs` registered in `server` as `service`, with a TTL
/// check of `ttl_secs` and an ID no other instance of this test run has (a port can be reused).
fn start_instance(server: &TestServer, service: &str, ttl_secs: u64, extra: &[&str]) -> (Example, String) {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let id = format!("{service}-{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let ttl = ttl_secs.to_string();
    let mut args = vec![
        "--service",
        service,
        "--id",
        &id,
        "--sextant",
        &server.base,
        "--ttl-secs",
        &ttl,
    ];
    args.extend_from_slice(extra);
    let instance = Example::start("self_registering", &args, &[]);
    // The server may run on this test's runtime: wait off its workers.
    tokio::task::block_in_place(|| instance.line(&format!("registered {id} "), STARTUP));
    (instance, id)
}

/// The healthy instance IDs of `service`, read directly from the server.
async fn healthy_ids(server: &TestServer, service: &str) -> Vec<String> {
    let list = server.get_json(&format!("/v1/health/service/{service}?passing")).await;
    let mut ids: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Service"]["ID"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// The `X-Consul-Index` a read of `service`'s health gets now.
async fn view_index(server: &TestServer, service: &str) -> u64 {
    let (_, headers, _) = server.get(&format!("/v1/health/service/{service}?passing")).await;
    headers["X-Consul-Index"].to_str().unwrap().parse().unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// One request sent through a balancer: when the pick began, to which instance, and what answered.
struct Sent {
    strategy: Strategy,
    picked_at: Instant,
    id: String,
    answered: Option<String>,
}

/// Instances of `examples/self_registering` start, are deregistered, fail and stop at random while
/// one balancer of each kind sends requests over real HTTP. No request is picked for an instance
/// after the client's view dropped it; the time from a change to the view dropping the instance
/// (the view's lag) is measured and printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balancers_never_pick_an_instance_after_the_view_dropped_it() {
    let server = TestServer::start().await;
    let client = Client::new(&server.base).unwrap();
    let view = client.watch("churn");

    // When each instance left the view, as seen by a reader of the same view.
    let left_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let recorder = {
        let (mut view, left_at) = (view.clone(), left_at.clone());
        tokio::spawn(async move {
            let mut present: Vec<String> = Vec::new();
            while let Ok(now) = view.changed().await {
                let seen = Instant::now();
                let ids: Vec<String> = now.instances().iter().map(|i| i.id.clone()).collect();
                for gone in present.iter().filter(|id| !ids.contains(id)) {
                    left_at.lock().unwrap().insert(gone.clone(), seen);
                }
                present = ids;
            }
        })
    };

    let stop = tokio_util::sync::CancellationToken::new();
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let mut senders = tokio::task::JoinSet::new();
    for strategy in Strategy::ALL {
        let (balancer, http, sent, stop) = (view.balancer(strategy), http.clone(), sent.clone(), stop.clone());
        senders.spawn(async move {
            while !stop.is_cancelled() {
                let picked_at = Instant::now();
                let Ok(instance) = balancer.pick() else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let answered = match http.get(format!("http://{}/", instance.socket_addr())).send().await {
                    Ok(response) => response.text().await.ok().map(|t| t.trim().to_string()),
                    Err(_) => None,
                };
                sent.lock().unwrap().push(Sent {
                    strategy,
                    picked_at,
                    id: instance.id.clone(),
                    answered,
                });
                drop(instance);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
    }

    // The churn: each departure, and when it was asked for (the lag is measured from there).
    let mut live: Vec<(Example, String)> = (0..4).map(|_| start_instance(&server, "churn", 30, &[])).collect();
    let mut stopped = Vec::new();
    let mut asked: Vec<(String, Instant, &str)> = Vec::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(rand::random_range(100..300))).await;
        let action = match live.len() {
            0..3 => 0,
            3..6 => rand::random_range(0..=3),
            _ => rand::random_range(1..=3),
        };
        if action == 0 {
            live.push(start_instance(&server, "churn", 30, &[]));
            continue;
        }
        let (instance, id) = live.swap_remove(rand::random_range(0..live.len()));
        match action {
            // Crashed, then deregistered by a third party.
            1 => {
                instance.signal("-KILL");
                let at = Instant::now();
                client.deregister(&id).await.unwrap();
                asked.push((id, at, "deregistered"));
            }
            // Hung: its check failed (the test fails it, as a missed heartbeat would).
            2 => {
                instance.signal("-STOP");
                let at = Instant::now();
                client.fail_check(&format!("service:{id}"), "hung").await.unwrap();
                asked.push((id, at, "failed"));
            }
            // Stopped gracefully: it deregisters itself (not timed: its own shutdown is in it).
            _ => {
                asked.push((id, Instant::now(), "stopped"));
                instance.signal("-TERM");
            }
        }
        stopped.push(instance);
    }
    for (_, id) in &live {
        let answered = async || sent.lock().unwrap().iter().any(|r| &r.id == id && r.answered.is_some());
        wait_for(&format!("a request answered by {id}"), answered).await;
    }
    for (id, _, _) in &asked {
        wait_for(&format!("{id} to leave the view"), async || {
            left_at.lock().unwrap().contains_key(id)
        })
        .await;
    }
    stop.cancel();
    senders.join_all().await;
    recorder.abort();

    let left_at = left_at.lock().unwrap().clone();
    let sent = std::mem::take(&mut *sent.lock().unwrap());
    let mut late = Vec::new();
    for request in &sent {
        if let Some(&left) = left_at.get(&request.id)
            && request.picked_at > left
        {
            late.push(format!(
                "{:?} picked {} {:?} after it left the view",
                request.strategy,
                request.id,
                request.picked_at - left
            ));
        }
        if let Some(answered) = &request.answered {
            assert_eq!(answered, &request.id, "the instance that answered is the one picked");
        }
    }
    assert!(late.is_empty(), "{}", late.join("\n"));

    let mut lags: Vec<Duration> = asked
        .iter()
        .filter(|(_, _, how)| *how != "stopped")
        .map(|(id, at, _)| left_at[id] - *at)
        .collect();
    lags.sort();
    let mut by_strategy: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for request in &sent {
        let entry = by_strategy.entry(format!("{:?}", request.strategy)).or_default();
        entry.0 += 1;
        entry.1 += usize::from(request.answered.is_none());
    }
    println!(
        "{} requests through 5 balancers while {} instances came and went ({} deregistered or failed \
         by the API, {} stopped); requests and failed requests (to an instance already dead but not \
         yet out of the view) by balancer: {by_strategy:?}",
        sent.len(),
        asked.len() + live.len(),
        lags.len(),
        asked.len() - lags.len(),
    );
    if !lags.is_empty() {
        println!(
            "view lag (change asked → instance out of the client's view): p50 {:?}, p99 {:?}, max {:?}",
            percentile(&lags, 0.5),
            percentile(&lags, 0.99),
            lags.last().unwrap()
        );
        // Blocking queries wake on the change: nowhere near the 60 s wait a polling view would show.
        assert!(*lags.last().unwrap() < Duration::from_secs(5), "{lags:?}");
    }
}

/// `examples/balancing_client` against three `examples/self_registering` instances, one of them
/// slow: round robin is exact, random and weighted even, and the two load-aware balancers send
/// the slow instance far fewer requests. Then the same over DNS (SRV).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_balancing_client_spreads_requests_and_spares_a_slow_instance() {
    let server = TestServer::start().await;
    let mut instances: Vec<_> = (0..2)
        .map(|_| start_instance(&server, "web", 30, &["--delay-ms", "5"]))
        .collect();
    instances.push(start_instance(&server, "web", 30, &["--delay-ms", "100"]));
    let slow = instances[2].1.clone();
    wait_for("three healthy instances", async || {
        healthy_ids(&server, "web").await.len() == 3
    })
    .await;

    let args = [
        "--service",
        "web",
        "--sextant",
        &server.base,
        "--requests",
        "300",
        "--concurrency",
        "6",
    ];
    let output = run_to_end(Example::start("balancing_client", &args, &[]));
    let shares = parse_distribution(&output);
    let share = |strategy: &str, id: &str| shares[strategy].get(id).copied().unwrap_or(0);
    for (_, id) in &instances {
        assert_eq!(share("RoundRobin", id), 100, "{output:#?}");
        for strategy in ["Random", "Weighted"] {
            assert!(
                (50..=150).contains(&share(strategy, id)),
                "{strategy} {id}: {output:#?}"
            );
        }
    }
    // The slow instance answers 20 times slower: a load-aware balancer sends it a small share.
    assert!(share("LeastOutstanding", &slow) < 45, "{output:#?}");
    assert!(share("PowerOfTwoChoices", &slow) < 75, "{output:#?}");

    let dns = server.dns.to_string();
    let args = [
        "--service",
        "web",
        "--dns",
        &dns,
        "--name",
        "web.service.trading-dc.",
        "--requests",
        "60",
    ];
    let output = run_to_end(Example::start("balancing_client", &args, &[]));
    assert!(
        output.iter().any(|l| l == "3 healthy instance(s) of web"),
        "{output:#?}"
    );
    assert_eq!(
        parse_distribution(&output)["RoundRobin"].values().sum::<usize>(),
        60,
        "{output:#?}"
    );
}

/// A view through the system's resolvers (`DnsServer::System`, which reads /etc/resolv.conf):
/// `examples/balancing_client --dns system`, in a private mount namespace whose
/// /etc/resolv.conf names a sextant listening on port 53 of a loopback address (resolv.conf
/// takes no port).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_view_reads_through_the_system_resolver() {
    let unshare = crate::common::tools::require("unshare", "util-linux");
    let ip = format!("127.53.0.{}", rand::random_range(2..250));
    let server = TestServer::start_with(Config {
        dns: format!("{ip}:53").parse().unwrap(),
        ..test_config()
    })
    .await;
    let _instances: Vec<_> = (0..2).map(|_| start_instance(&server, "sysweb", 30, &[])).collect();
    let dir = TempDir::new("system-resolver");
    let resolv_conf = dir.0.join("resolv.conf");
    std::fs::write(&resolv_conf, format!("nameserver {ip}\noptions timeout:2 attempts:1\n")).unwrap();

    let mut command = std::process::Command::new(unshare);
    command
        .args([
            "-m",
            "sh",
            "-c",
            "mount --bind \"$1\" /etc/resolv.conf && shift && exec \"$@\"",
            "sh",
        ])
        .arg(&resolv_conf)
        .arg(crate::common::examples::path("balancing_client"))
        .args([
            "--service",
            "sysweb",
            "--dns",
            "system",
            "--name",
            "sysweb.service.trading-dc.",
            "--requests",
            "30",
        ]);
    let output = tokio::task::block_in_place(|| command.output()).unwrap();
    let stdout: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(String::from)
        .collect();
    println!("{}\n{}", stdout.join("\n"), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        stdout.iter().any(|l| l == "2 healthy instance(s) of sysweb"),
        "{stdout:#?}"
    );
    let round_robin = &parse_distribution(&stdout)["RoundRobin"];
    assert_eq!(round_robin.values().collect::<Vec<_>>(), [&15, &15], "{stdout:#?}");
}

/// Waits (off the runtime's workers) for an example to finish; its output, printed too.
fn run_to_end(mut example: Example) -> Vec<String> {
    let status = tokio::task::block_in_place(|| example.wait(Duration::from_secs(120)));
    let output = example.rest();
    println!("{}", output.join("\n"));
    assert!(status.success(), "the example failed ({status}): {output:#?}");
    output
}

/// `Strategy: … requests` headers, each followed by `  <id>  <count>  <share>%` lines.
fn parse_distribution(output: &[String]) -> HashMap<String, HashMap<String, usize>> {
    let mut shares: HashMap<String, HashMap<String, usize>> = HashMap::new();
    let mut current = String::new();
    for line in output {
        if let Some((strategy, _)) = line.split_once(": ").filter(|_| !line.starts_with(' ')) {
            current = strategy.to_string();
        } else if let [id, count, _share] = line.split_whitespace().collect::<Vec<_>>()[..] {
            shares
                .entry(current.clone())
                .or_default()
                .insert(id.to_string(), count.parse().unwrap());
        }
    }
    shares
}

/// A self-registered instance comes back by itself when sextant forgets it (deregistered behind
/// its back, then a restart with an empty registry on the same address), and a clean shutdown
/// leaves neither the instance nor its check behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_registration_survives_a_restart_and_leaves_nothing_behind() {
    let server = TestServer::start().await;
    let http = server.app().http_addr();
    let (mut instance, id) = start_instance(&server, "phoenix", 3, &[]);
    assert_eq!(healthy_ids(&server, "phoenix").await, vec![id.clone()]);
    // A client's view, to follow the restart (its blocking queries wait up to 60 s).
    let mut view = Client::new(&server.base).unwrap().watch("phoenix");
    view.ready().await.unwrap();

    let (status, _) = server.put(&format!("/v1/agent/service/deregister/{id}")).await;
    assert_eq!(status, 200);
    wait_for("the instance to register again", async || {
        healthy_ids(&server, "phoenix").await == [id.clone()]
    })
    .await;

    server.stop().await;
    wait_for("the view to lose the server", async || {
        view.current().failing().is_some()
    })
    .await;
    let old_index = view.current().index();
    let restarted = TestServer::start_with(Config { http, ..test_config() }).await;
    wait_for("the instance to register in the restarted server", async || {
        healthy_ids(&restarted, "phoenix").await == [id.clone()]
    })
    .await;
    // The restarted server's index is lower: the view reads afresh after losing the connection,
    // instead of blocking at the old index for the whole wait (60 s).
    let restarted_index = view_index(&restarted, "phoenix").await;
    assert!(restarted_index < old_index, "{restarted_index} < {old_index}");
    wait_for("the view to follow the restarted server", async || {
        let now = view.current();
        now.failing().is_none() && now.instances().len() == 1
    })
    .await;

    instance.signal("-TERM");
    let status = tokio::task::block_in_place(|| instance.wait(Duration::from_secs(10)));
    assert!(status.success(), "{status}");
    assert!(instance.rest().iter().any(|l| l == &format!("deregistered {id}")));
    assert_eq!(restarted.get_json("/v1/agent/services").await, serde_json::json!({}));
    assert_eq!(restarted.get_json("/v1/agent/checks").await, serde_json::json!({}));
}

/// `examples/folder_registrar`: files added, changed and removed are registered, updated and
/// deregistered; bad files are reported and skipped; an instance it did not register is left
/// alone; one it registered is put back if sextant loses it; and files removed while it was not
/// running are cleaned up when it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_folder_registrar_keeps_the_registry_in_step() {
    let server = TestServer::start().await;
    let dir = TempDir::new("registrar");
    let write = |file: &str, text: String| std::fs::write(dir.0.join(file), text).unwrap();
    let service = |id: &str, port: u16| {
        format!(
            r#"{{"ID": "{id}", "Name": "files", "Address": "10.0.0.1", "Port": {port}, "Check": {{"TTL": "1h", "Status": "passing"}}}}"#
        )
    };
    let client = Client::new(&server.base).unwrap();
    client
        .register(&Registration::new("files").id("by-hand").port(9))
        .await
        .unwrap();
    write("a.json", service("files-a", 80));
    write("b.json", service("files-b", 80));
    let args = [
        "--dir",
        dir.0.to_str().unwrap(),
        "--sextant",
        &server.base,
        "--interval-ms",
        "100",
    ];
    let registrar = Example::start("folder_registrar", &args, &[]);
    let ids = async || {
        let mut ids: Vec<String> = client.registered().await.unwrap().into_iter().map(|i| i.id).collect();
        ids.sort();
        ids
    };
    wait_for("a and b registered", async || {
        ids().await == ["by-hand", "files-a", "files-b"]
    })
    .await;
    let a = &client
        .registered()
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.id == "files-a")
        .unwrap();
    assert!(a.meta["external-source"].starts_with("folder:"), "{a:?}");

    write("a.json", service("files-a", 81));
    let port_of_a = async || {
        client
            .registered()
            .await
            .unwrap()
            .iter()
            .find(|i| i.id == "files-a")
            .map(|i| i.port)
    };
    wait_for("a's new port", async || port_of_a().await == Some(81)).await;
    std::fs::remove_file(dir.0.join("b.json")).unwrap();
    wait_for("b deregistered", async || ids().await == ["by-hand", "files-a"]).await;

    write("bad.json", "{not json".into());
    write(
        "c.json",
        r#"{"ID": "files-c", "Name": "files", "Port": "eighty"}"#.into(),
    );
    tokio::task::block_in_place(|| {
        registrar.line("bad.json: not JSON", Duration::from_secs(10));
        let refused = registrar.line("c.json: sextant refused it", Duration::from_secs(10));
        assert!(refused.contains("Port"), "{refused}");
    });
    client.deregister("files-a").await.unwrap();
    wait_for("a put back", async || ids().await == ["by-hand", "files-a"]).await;

    drop(registrar);
    std::fs::remove_file(dir.0.join("a.json")).unwrap();
    let _registrar = Example::start("folder_registrar", &args, &[]);
    wait_for("a cleaned up at start", async || ids().await == ["by-hand"]).await;
}

/// `examples/design_flow`: the design documents' flow against a real server, every step within
/// the documents' targets (the example exits 1 otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_design_documents_flow_meets_their_targets() {
    let server = TestServer::start().await;
    let dns = server.dns.to_string();
    let output = run_to_end(Example::start(
        "design_flow",
        &["--sextant", &server.base, "--dns", &dns],
        &[],
    ));
    let steps: Vec<_> = output.iter().filter(|l| l.ends_with(" ok")).collect();
    assert_eq!(steps.len(), 5, "{output:#?}");
}

/// A view over SRV records: the instances with their SRV weights, a change seen at the next
/// read, NODATA as "no healthy instance", NXDOMAIN as "unknown service".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_view_follows_srv_records() {
    let server = TestServer::start().await;
    let client = Client::new(&server.base).unwrap();
    let passing = sextant::client::Check::Ttl {
        ttl: Duration::from_secs(3600),
        passing: true,
    };
    for (id, weight, port) in [("dnsweb-1", 3, 8081), ("dnsweb-2", 1, 8082)] {
        let registration = Registration::new("dnsweb")
            .id(id)
            .address("192.0.2.10")
            .port(port)
            .weight(weight)
            .check(passing.clone());
        client.register(&registration).await.unwrap();
    }
    let mut view = ServiceView::dns("dnsweb.service.trading-dc.", DnsServer::At(server.dns)).unwrap();
    let read = view.ready().await.unwrap();
    let mut seen: Vec<_> = read
        .instances()
        .iter()
        .map(|i| (i.address.clone(), i.port, i.weight))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [("192.0.2.10".to_string(), 8081, 3), ("192.0.2.10".to_string(), 8082, 1)]
    );

    client.deregister("dnsweb-2").await.unwrap();
    wait_for("the next read", async || view.current().instances().len() == 1).await;
    client.fail_check("service:dnsweb-1", "down").await.unwrap();
    let balancer = view.balancer(Strategy::RoundRobin);
    wait_for("no healthy instance", async || {
        matches!(balancer.pick(), Err(Error::NoHealthyInstance { .. }))
    })
    .await;

    let mut unknown = ServiceView::dns("nosuch.service.trading-dc.", DnsServer::At(server.dns)).unwrap();
    unknown.ready().await.unwrap();
    assert!(matches!(
        unknown.balancer(Strategy::Random).pick(),
        Err(Error::ServiceUnknown { .. })
    ));
}

const TOKEN: &str = "client-s3cret";

/// What a caller sees for each kind of failure: a refused token, a refusal with the server's
/// message, an unknown ID, an unknown service, a service with no healthy instance, a server that
/// cannot be reached, and one that does not answer (each attempt timed out and retried).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_what_happened() {
    let server = TestServer::start_with(Config {
        acl_token: Some(TOKEN.into()),
        ..test_config()
    })
    .await;
    let client = Client::builder(&server.base).token(TOKEN).build().unwrap();

    let wrong = Client::builder(&server.base).token("guess").build().unwrap();
    let error = wrong.register(&Registration::new("web")).await.unwrap_err();
    assert!(matches!(error, Error::Forbidden { .. }), "{error}");

    let error = client
        .register_json(&serde_json::json!({"Name": "web", "Port": "eighty"}))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Refused { status: 400, message } if message.contains("Port")),
        "{error}"
    );

    let error = client.deregister("nobody").await.unwrap_err();
    assert!(matches!(error, Error::NotFound { .. }), "{error}");

    client.register(&Registration::new("sick").port(80)).await.unwrap(); // no check: passing
    let error = client.fail_check("service:sick", "").await.unwrap_err(); // no check to fail
    assert!(matches!(error, Error::NotFound { .. }), "{error}");
    let error = client.deregister("..").await.unwrap_err();
    assert!(matches!(error, Error::Invalid { .. }), "{error}");
    client
        .register(&Registration::new("sick").port(80).check(sextant::client::Check::Ttl {
            ttl: Duration::from_secs(60),
            passing: false,
        }))
        .await
        .unwrap();
    let mut sick = client.watch("sick");
    sick.ready().await.unwrap();
    let error = sick.balancer(Strategy::RoundRobin).pick().unwrap_err();
    assert!(matches!(error, Error::NoHealthyInstance { .. }), "{error}");
    let mut nosuch = client.watch("nosuch");
    nosuch.ready().await.unwrap();
    let error = nosuch.balancer(Strategy::RoundRobin).pick().unwrap_err();
    assert!(matches!(error, Error::ServiceUnknown { .. }), "{error}");
    println!("{error}");

    let quick = Retry {
        attempts: 3,
        first: Duration::from_millis(10),
        max: Duration::from_millis(20),
    };
    let closed = format!("127.0.0.1:{}", crate::common::tools::free_port());
    let error = Client::builder(&closed)
        .retry(quick)
        .build()
        .unwrap()
        .healthy("web")
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Unreachable { .. }), "{error}");
    println!("{error}");

    // A server that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = silent.local_addr().unwrap().to_string();
    let accepted = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok(Ok((socket, _))) = tokio::time::timeout(Duration::from_secs(3), silent.accept()).await {
            held.push(socket);
        }
        held.len()
    });
    let slow = Client::builder(&address)
        .timeout(Duration::from_millis(200))
        .retry(quick)
        .build()
        .unwrap();
    let error = slow.healthy("web").await.unwrap_err();
    assert!(matches!(error, Error::Timeout { .. }), "{error}");
    println!("{error}");
    assert_eq!(accepted.await.unwrap(), 3, "one connection per attempt");

    let error = Client::new("http://").err().unwrap();
    assert!(matches!(error, Error::Invalid { .. }), "{error}");
}

/// The examples take the ACL token from the environment as Consul's clients do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_comes_from_the_environment() {
    let server = TestServer::start_with(Config {
        acl_token: Some(TOKEN.into()),
        ..test_config()
    })
    .await;
    let args = ["--service", "web", "--sextant", &server.base];
    let mut running = Vec::new();
    for variable in ["SEXTANT_HTTP_TOKEN", "CONSUL_HTTP_TOKEN"] {
        let instance = Example::start("self_registering", &args, &[(variable, TOKEN)]);
        tokio::task::block_in_place(|| instance.line("registered ", STARTUP));
        running.push(instance);
    }
    let mut refused = Example::start("self_registering", &args, &[]);
    let status = tokio::task::block_in_place(|| refused.wait(STARTUP));
    assert!(!status.success(), "registered without a token");
}
