//! Real resolvers forwarding the domain to sextant, as hosts run them: unbound (forward-zone and
//! stub-zone), dnsmasq, BIND and systemd-resolved, started on loopback ports with the files in
//! `examples/forwarding/` (only the port changed); and each given two sextant servers of a
//! cluster, answering through one when the other is killed. `scripts/test.sh` installs them
//! (`apt-get install -y unbound dnsmasq-base bind9`; systemd-resolved is unpacked, see below).

use crate::common;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::dns::*;
use common::etcd::EtcdCluster;
use common::on_etcd::{answers, kill_9, register, start_named_on};
use common::tools::{TempDir, free_port, require};
use common::{TestServer, ip, test_config, wait_for};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::json;

/// A resolver process, killed when dropped.
struct Resolver {
    name: &'static str,
    addr: SocketAddr,
    child: Child,
    _dir: TempDir,
}

impl Drop for Resolver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An example from `examples/forwarding/`, pointed at the `sextant` servers instead of 127.0.0.1
/// ports 8600 (and 8601: the second server of a cluster, in `cluster/`).
fn example(file: &str, sextant: &[SocketAddr]) -> String {
    let dir = if sextant.len() > 1 {
        "examples/forwarding/cluster"
    } else {
        "examples/forwarding"
    };
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir).join(file);
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // Through placeholders: a test's port may hold the digits of the other example port.
    let ports = sextant.iter().zip([("8600", "{first}"), ("8601", "{second}")]);
    for (server, (port, placeholder)) in ports.clone() {
        assert!(
            text.contains("127.0.0.1") && text.contains(port),
            "{file} names 127.0.0.1 port {port}"
        );
        assert_eq!(server.ip().to_string(), "127.0.0.1");
        text = text.replace(port, placeholder);
    }
    for (server, (_, placeholder)) in ports {
        text = text.replace(placeholder, &server.port().to_string());
    }
    text
}

/// Writes a resolver's configuration into `dir` and has the resolver's own checker, `(tool,
/// package)`, accept it first, so a bad file fails here with the checker's words.
fn write_checked_config(dir: &TempDir, name: &str, config: &str, (tool, package): (&str, &str)) -> PathBuf {
    let file = dir.0.join(name);
    std::fs::write(&file, config).unwrap();
    let check = Command::new(require(tool, package)).arg(&file).output().unwrap();
    assert!(
        check.status.success(),
        "{tool} refused the config: {}",
        String::from_utf8_lossy(&check.stdout)
    );
    file
}

impl Resolver {
    fn spawn(name: &'static str, mut command: Command, addr: SocketAddr, dir: TempDir) -> Self {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            name,
            addr,
            child,
            _dir: dir,
        }
    }

    /// unbound with `trading-dc` sent to sextant: `forward-zone` (a resolver's usual setup) or
    /// `stub-zone` (unbound iterates, treating sextant as the zone's authoritative server).
    fn unbound(sextant: &[SocketAddr], zone_kind: &str) -> Self {
        let binary = require("unbound", "unbound");
        let dir = TempDir::new("unbound");
        let port = free_port();
        let zone = if zone_kind == "forward" {
            example("unbound.conf", sextant)
        } else {
            example("unbound-stub.conf", sextant)
        };
        let config = format!(
            "server:\n  interface: 127.0.0.1\n  port: {port}\n  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  \
             directory: \"{dir}\"\n  pidfile: \"\"\n  use-syslog: no\n  logfile: \"\"\n  verbosity: 0\n  do-ip6: no\n  \
             access-control: 127.0.0.0/8 allow\n  module-config: \"iterator\"\n  num-threads: 1\n\n{zone}",
            dir = dir.0.display(),
        );
        let file = write_checked_config(&dir, "unbound.conf", &config, ("unbound-checkconf", "unbound"));
        let mut command = Command::new(binary);
        command.arg("-d").arg("-c").arg(&file);
        Self::spawn(
            if zone_kind == "forward" {
                "unbound forward-zone"
            } else {
                "unbound stub-zone"
            },
            command,
            SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        )
    }

    /// dnsmasq with `server=/trading-dc/<sextant>` and its cache on.
    fn dnsmasq(sextant: &[SocketAddr]) -> Self {
        let binary = require("dnsmasq", "dnsmasq-base");
        let dir = TempDir::new("dnsmasq");
        let port = free_port();
        let conf = dir.0.join("dnsmasq.conf");
        std::fs::write(&conf, example("dnsmasq.conf", sextant)).unwrap();
        let mut command = Command::new(binary);
        command.args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--user=root",
            &format!("--pid-file={}", dir.0.join("dnsmasq.pid").display()),
            &format!("--port={port}"),
            &format!("--conf-file={}", conf.display()),
            "--cache-size=1000",
        ]);
        Self::spawn("dnsmasq", command, SocketAddr::from(([127, 0, 0, 1], port)), dir)
    }

    /// BIND's named with the example's forward zone and `validate-except`, DNSSEC validation on
    /// as shipped, recursion for loopback only.
    fn named(sextant: &[SocketAddr]) -> Self {
        let binary = require("named", "bind9");
        let dir = TempDir::new("named");
        let port = free_port();
        let config = format!(
            "options {{\n  directory \"{dir}\";\n  pid-file \"{dir}/named.pid\";\n  \
             session-keyfile \"{dir}/session.key\";\n  managed-keys-directory \"{dir}\";\n  \
             listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n  recursion yes;\n  \
             allow-recursion {{ 127.0.0.1; }};\n  dnssec-validation auto;\n  \
             validate-except {{ \"trading-dc\"; }};\n}};\ncontrols {{ }};\n\
             logging {{ channel log {{ file \"{dir}/named.log\"; severity warning; }}; \
             category default {{ log; }}; }};\n\n{zone}",
            dir = dir.0.display(),
            zone = example("named.conf", sextant),
        );
        let file = write_checked_config(&dir, "named.conf", &config, ("named-checkconf", "bind9"));
        let mut command = Command::new(binary);
        command.arg("-f").arg("-c").arg(&file).arg("-n").arg("1");
        Self::spawn("BIND", command, SocketAddr::from(([127, 0, 0, 1], port)), dir)
    }

    /// systemd-resolved with the example as a drop-in, run without systemd: `scripts/test.sh`
    /// unpacks Debian's package into `target/systemd-resolved` (installing it would take over
    /// /etc/resolv.conf). It runs in a private mount namespace whose /etc/systemd is the test's
    /// (the drop-in, and a second one that moves the stub listener to a free loopback port), whose
    /// /etc/passwd has the user it drops privileges to, and whose /run/systemd is empty, so nothing
    /// of the machine's changes. Mounting needs root.
    fn resolved(sextant: &[SocketAddr]) -> Self {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/systemd-resolved");
        let binary = root.join("lib/systemd/systemd-resolved");
        assert!(
            binary.exists(),
            "{} is missing: scripts/test.sh unpacks it (apt-get download systemd-resolved libsystemd-shared, \
             then dpkg -x each into target/systemd-resolved)",
            binary.display()
        );
        let library = std::fs::read_dir(root.join("usr/lib"))
            .unwrap()
            .map(|entry| entry.unwrap().path().join("systemd"))
            .find(|dir| dir.is_dir())
            .expect("libsystemd-shared unpacked beside systemd-resolved");
        let unshare = require("unshare", "util-linux");
        let mount_allowed = Command::new(&unshare).args(["-m", "true"]).status().unwrap().success();
        assert!(
            mount_allowed,
            "systemd-resolved's test runs it in a mount namespace, which needs root"
        );

        let dir = TempDir::new("resolved");
        let port = free_port();
        let etc = dir.0.join("etc-systemd");
        let drop_ins = etc.join("resolved.conf.d");
        std::fs::create_dir_all(&drop_ins).unwrap();
        std::fs::write(drop_ins.join("sextant.conf"), example("resolved.conf", sextant)).unwrap();
        std::fs::write(
            drop_ins.join("test.conf"),
            format!(
                "[Resolve]\nDNSStubListener=no\nDNSStubListenerExtra=127.0.0.1:{port}\nLLMNR=no\nMulticastDNS=no\n"
            ),
        )
        .unwrap();
        let passwd = dir.0.join("passwd");
        let group = dir.0.join("group");
        let with_line = |file: &str, line: &str| std::fs::read_to_string(file).unwrap() + line;
        std::fs::write(
            &passwd,
            with_line("/etc/passwd", "systemd-resolve:x:64990:64990::/:/usr/sbin/nologin\n"),
        )
        .unwrap();
        std::fs::write(&group, with_line("/etc/group", "systemd-resolve:x:64990:\n")).unwrap();
        std::fs::create_dir_all("/run/systemd").unwrap();

        let mut command = Command::new(unshare);
        command
            .args(["-m", "sh", "-c"])
            .arg(
                "mount -t tmpfs tmpfs /run/systemd && mount --bind \"$1\" /etc/systemd && \
                 mount --bind \"$2\" /etc/passwd && mount --bind \"$3\" /etc/group && \
                 LD_LIBRARY_PATH=\"$4\" exec \"$5\"",
            )
            .arg("sh")
            .args([&etc, &passwd, &group, &library, &binary])
            .env("SYSTEMD_LOG_LEVEL", "warning");
        Self::spawn(
            "systemd-resolved",
            command,
            SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        )
    }
}

async fn resolve_a(resolver: &Resolver, name: &str) -> (ResponseCode, Vec<IpAddr>) {
    let reply = udp(resolver.addr, name, RecordType::A).await;
    let mut ips = addresses(&reply);
    ips.sort();
    (rcode(&reply), ips)
}

/// Polls until the resolver answers (it may still be starting).
async fn wait_ready(resolver: &mut Resolver) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply = udp_raw_within(
            resolver.addr,
            &query_message("orders.service.trading-dc.", RecordType::A, None)
                .to_vec()
                .unwrap(),
            Duration::from_millis(300),
        )
        .await;
        if reply.is_some() {
            return;
        }
        if let Some(status) = resolver.child.try_wait().unwrap() {
            panic!("{} exited with {status}", resolver.name);
        }
        assert!(Instant::now() < deadline, "{} did not start answering", resolver.name);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A, SRV and a negative answer through the resolver, then an instance turning critical: the
/// resolver's answer changes within the service TTL.
async fn resolves_through(make: impl Fn(&[SocketAddr]) -> Resolver) {
    let mut config = test_config();
    config.service_ttl = Duration::from_secs(2);
    let server = TestServer::start_with(config).await;
    for (id, address) in [("orders-1", "10.0.0.1"), ("orders-2", "10.0.0.2")] {
        server
            .register(
                json!({"Name": "orders", "ID": id, "Address": address, "Port": 8080, "Tags": ["primary"],
                   "Check": {"TTL": "1m", "Status": "passing"}}),
            )
            .await;
    }
    let mut resolver = make(&[server.dns]);
    wait_ready(&mut resolver).await;
    let who = resolver.name;

    let (code, ips) = resolve_a(&resolver, "orders.service.trading-dc.").await;
    assert_eq!(
        (code, ips),
        (ResponseCode::NoError, vec![ip("10.0.0.1"), ip("10.0.0.2")]),
        "{who}: A"
    );
    let (_, ips) = resolve_a(&resolver, "primary.orders.service.trading-dc.").await;
    assert_eq!(ips, [ip("10.0.0.1"), ip("10.0.0.2")], "{who}: tag form");

    for name in ["orders.service.trading-dc.", "_orders._tcp.service.trading-dc."] {
        let srv = udp(resolver.addr, name, RecordType::SRV).await;
        let mut found = srvs(&srv);
        found.sort();
        assert_eq!(
            found,
            [
                (8080, 1, "0a000001.addr.trading-dc.".to_owned()),
                (8080, 1, "0a000002.addr.trading-dc.".to_owned())
            ],
            "{who}: SRV {name}"
        );
    }
    let (_, target) = resolve_a(&resolver, "0a000002.addr.trading-dc.").await;
    assert_eq!(target, [ip("10.0.0.2")], "{who}: SRV target");

    let (code, ips) = resolve_a(&resolver, "missing.service.trading-dc.").await;
    assert_eq!((code, ips.len()), (ResponseCode::NXDomain, 0), "{who}: unknown service");

    let (code, _) = server.put("/v1/agent/check/fail/service:orders-2").await;
    assert_eq!(code, 200);
    let failed = Instant::now();
    loop {
        let (_, ips) = resolve_a(&resolver, "orders.service.trading-dc.").await;
        if ips == [ip("10.0.0.1")] {
            break;
        }
        // Within the TTL, plus up to 1 s because resolvers count TTLs in whole seconds.
        assert!(
            failed.elapsed() < Duration::from_millis(3500),
            "{who}: still answers {ips:?} {:?} after the instance failed (TTL 2s)",
            failed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "{who}: a failed instance left the resolver's answer after {:?} (TTL 2s)",
        failed.elapsed()
    );
    drop(resolver);
    server.stop().await;
}

#[tokio::test]
async fn unbound_forward_zone() {
    resolves_through(|dns| Resolver::unbound(dns, "forward")).await;
}

#[tokio::test]
async fn unbound_stub_zone() {
    resolves_through(|dns| Resolver::unbound(dns, "stub")).await;
}

#[tokio::test]
async fn dnsmasq_server_line() {
    resolves_through(Resolver::dnsmasq).await;
}

#[tokio::test]
async fn bind_forward_zone() {
    resolves_through(Resolver::named).await;
}

#[tokio::test]
async fn systemd_resolved_drop_in() {
    resolves_through(Resolver::resolved).await;
}

/// Two sextant servers sharing one registry in etcd, the resolver given both (README, "Running a
/// cluster"): one killed, a name first asked after is answered through the other; the first back
/// on its port and the second killed, the same the other way round (so the resolver had to move,
/// whichever server it preferred).
async fn fails_over_between_servers(make: impl Fn(&[SocketAddr]) -> Resolver) {
    let cluster = EtcdCluster::start(3);
    let ports = [free_port(), free_port()];
    let start = |i: usize| start_named_on(&cluster, "/resolvers/", ["sextant-a", "sextant-b"][i], ports[i]);
    let mut servers = [Some(start(0)), Some(start(1))];
    assert_eq!(register(servers[0].as_ref().unwrap(), 1).await.0, 200);
    let mut resolver = make(&ports.map(|p| SocketAddr::from(([127, 0, 0, 1], p))));
    wait_ready(&mut resolver).await;
    let who = resolver.name;
    let (_, ips) = resolve_a(&resolver, "svc-1.service.trading-dc.").await;
    assert_eq!(ips, [ip("10.7.0.2")], "{who}");
    for (killed, fresh) in [(0, 2), (1, 3)] {
        let survivor = servers[1 - killed].as_ref().unwrap();
        assert_eq!(register(survivor, fresh).await.0, 200);
        kill_9(servers[killed].take().unwrap());
        let since = Instant::now();
        // A name the resolver has not cached: it must ask a server that answers.
        let query = query_message(&format!("svc-{fresh}.service.trading-dc."), RecordType::A, None)
            .to_vec()
            .unwrap();
        let expected = ip(&format!("10.7.0.{}", fresh + 1));
        loop {
            let reply = udp_raw_within(resolver.addr, &query, Duration::from_secs(3)).await;
            let answered = reply
                .and_then(|reply| hickory_proto::op::Message::from_vec(&reply).ok())
                .is_some_and(|reply| addresses(&reply) == [expected]);
            if answered {
                break;
            }
            assert!(
                since.elapsed() < Duration::from_secs(30),
                "{who}: never asked the server still up"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "{who}: sextant server {killed} of 2 killed -> a new name answered through the other after {:?}",
            since.elapsed()
        );
        // Back on its port, serving what the other took meanwhile.
        let back = start(killed);
        wait_for("the restarted server serving", async || answers(&back, fresh).await).await;
        servers[killed] = Some(back);
    }
}

#[tokio::test]
async fn unbound_fails_over_between_servers() {
    fails_over_between_servers(|dns| Resolver::unbound(dns, "forward")).await;
}

#[tokio::test]
async fn dnsmasq_fails_over_between_servers() {
    fails_over_between_servers(Resolver::dnsmasq).await;
}

#[tokio::test]
async fn bind_fails_over_between_servers() {
    fails_over_between_servers(Resolver::named).await;
}

#[tokio::test]
async fn systemd_resolved_fails_over_between_servers() {
    fails_over_between_servers(Resolver::resolved).await;
}

/// `dig`, as the README's walk-through uses it.
#[tokio::test]
async fn dig_smoke() {
    let server = TestServer::start().await;
    server
        .register(json!({"Name": "orders", "ID": "orders-1", "Address": "10.0.0.1", "Port": 8080}))
        .await;
    let dig = require("dig", "bind9-dnsutils");
    let port = server.dns.port().to_string();
    let run = async |args: &[&str]| {
        let output = tokio::process::Command::new(&dig)
            .args(["@127.0.0.1", "-p", &port, "+time=2", "+tries=1"])
            .args(args)
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "dig {args:?} failed");
        String::from_utf8(output.stdout).unwrap()
    };
    let a = run(&["orders.service.trading-dc", "A", "+short"]).await;
    assert_eq!(a.trim(), "10.0.0.1");
    let srv = run(&["orders.service.trading-dc", "SRV"]).await;
    assert!(srv.contains("status: NOERROR") && srv.contains("flags: qr aa"), "{srv}");
    assert!(srv.contains("1 1 8080 0a000001.addr.trading-dc."), "{srv}");
    assert!(srv.contains("0a000001.addr.trading-dc. 0\tIN\tA\t10.0.0.1"), "{srv}");
    let tcp = run(&["+tcp", "orders.service.trading-dc", "A", "+short"]).await;
    assert_eq!(tcp.trim(), "10.0.0.1");
    let nx = run(&["nothing.service.trading-dc", "A"]).await;
    assert!(nx.contains("status: NXDOMAIN") && nx.contains("SOA"), "{nx}");
    let axfr = run(&["trading-dc", "AXFR"]).await;
    assert!(axfr.contains("Transfer failed"), "{axfr}");
    server.stop().await;
}
