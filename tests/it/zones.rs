//! Zone files: several in one folder, reloaded without a restart (`App::reload_zones`, which
//! SIGHUP calls; `tests/binary.rs` sends the real signal), and a broken file that is reported with
//! its line while the running zones stay.

use crate::common;

use std::path::{Path, PathBuf};

use common::dns::*;
use common::{TestServer, ip, test_config};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

fn zone_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sextant-zones-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        common::repo_zones().join("trading-dc.zone"),
        dir.join("trading-dc.zone"),
    )
    .unwrap();
    dir
}

fn example_zone(dir: &Path, www: &str, extra: &str) {
    let text = format!(
        "$ORIGIN example.test.\n$TTL 60\n@ IN SOA ns1 hostmaster 1 3600 600 86400 30\n@ IN NS ns1\nns1 IN A 127.0.0.1\nwww IN A {www}\n{extra}"
    );
    std::fs::write(dir.join("example.test.zone"), text).unwrap();
}

fn soa_serial(reply: &Message) -> Option<u32> {
    reply.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(soa.serial),
        _ => None,
    })
}

#[tokio::test]
async fn zones_reload_and_a_broken_file_leaves_the_running_zones() {
    let dir = zone_dir("reload");
    example_zone(&dir, "10.9.0.1", "");
    let mut config = test_config();
    config.zones = dir.clone();
    let server = TestServer::start_with(config).await;
    assert_eq!(
        addresses(&udp(server.dns, "www.example.test.", RecordType::A).await),
        [ip("10.9.0.1")]
    );
    let nx = udp(server.dns, "nothing.service.trading-dc.", RecordType::A).await;
    assert_eq!(soa_serial(&nx), Some(1));

    // Edit both files: a changed and a new record, and a new serial for the served domain.
    example_zone(&dir, "10.9.0.2", "api IN A 10.9.0.3\n");
    let domain_zone = std::fs::read_to_string(dir.join("trading-dc.zone")).unwrap();
    std::fs::write(
        dir.join("trading-dc.zone"),
        domain_zone.replace("1          ; serial", "2 ; serial"),
    )
    .unwrap();
    let files = server.app().reload_zones().expect("valid zones reload");
    assert_eq!(files.len(), 2);
    assert_eq!(
        addresses(&udp(server.dns, "www.example.test.", RecordType::A).await),
        [ip("10.9.0.2")]
    );
    assert_eq!(
        addresses(&tcp(server.dns, "api.example.test.", RecordType::A).await),
        [ip("10.9.0.3")]
    );
    // The registry's negative answers carry the new SOA too.
    let nx = udp(server.dns, "nothing.service.trading-dc.", RecordType::A).await;
    assert_eq!((rcode(&nx), soa_serial(&nx)), (ResponseCode::NXDomain, Some(2)));

    // A broken file: the error names the file and the line, and the running zones stay.
    example_zone(&dir, "10.9.0.4", "bad IN A 999.1.1.1\n");
    let error = server
        .app()
        .reload_zones()
        .expect_err("a bad address is refused")
        .to_string();
    assert!(
        error.contains("example.test.zone") && error.contains("line 7"),
        "{error}"
    );
    assert_eq!(
        addresses(&udp(server.dns, "www.example.test.", RecordType::A).await),
        [ip("10.9.0.2")]
    );
    assert_eq!(
        addresses(&udp(server.dns, "api.example.test.", RecordType::A).await),
        [ip("10.9.0.3")]
    );
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// RFC 2308: a negative answer's SOA carries the zone's minimum as its TTL (when below the SOA's
/// own TTL), so resolvers cache NXDOMAIN and NODATA for exactly as long as the zone asks.
#[tokio::test]
async fn negative_answers_are_cached_for_the_soa_minimum() {
    let dir = zone_dir("minimum");
    let shipped = std::fs::read_to_string(dir.join("trading-dc.zone")).unwrap();
    let with_minimum = shipped.replace("0 )        ; minimum", "45 )       ; minimum");
    assert_ne!(shipped, with_minimum, "the shipped zone's minimum line changed");
    std::fs::write(dir.join("trading-dc.zone"), with_minimum).unwrap();
    let mut config = test_config();
    config.zones = dir.clone();
    let server = TestServer::start_with(config).await;
    server
        .register(serde_json::json!({"Name": "orders", "Address": "10.0.0.1", "Port": 80}))
        .await;

    for (name, rtype, code) in [
        ("nothing.service.trading-dc.", RecordType::A, ResponseCode::NXDomain),
        ("orders.service.trading-dc.", RecordType::TXT, ResponseCode::NoError),
        ("www.trading-dc.", RecordType::A, ResponseCode::NXDomain),
    ] {
        for reply in [udp(server.dns, name, rtype).await, tcp(server.dns, name, rtype).await] {
            assert_eq!(rcode(&reply), code, "{name} {rtype}");
            assert!(reply.answers.is_empty(), "{name} {rtype}");
            let soa = &reply.authorities[0];
            assert_eq!(soa.record_type(), RecordType::SOA, "{name} {rtype}");
            assert_eq!(soa.ttl, 45, "{name} {rtype}: negative TTL");
        }
    }
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Zone-file answers come back under the name as asked, as registry answers do (hickory's
/// catalog lower-cased them: `NS1.Trading-DC` was answered as `ns1.trading-dc.`).
#[tokio::test]
async fn zone_file_answers_keep_the_case_asked() {
    let server = TestServer::start().await;
    for asked in ["NS1.Trading-DC.", "ns1.TRADING-DC.", "Trading-DC."] {
        let rtype = if asked.starts_with("Trading") {
            RecordType::SOA
        } else {
            RecordType::A
        };
        for reply in [udp(server.dns, asked, rtype).await, tcp(server.dns, asked, rtype).await] {
            assert_eq!(rcode(&reply), ResponseCode::NoError, "{asked}");
            assert!(!reply.answers.is_empty(), "{asked}");
            for answer in &reply.answers {
                assert_eq!(answer.name.to_string(), asked, "{asked}: {reply:?}");
            }
        }
    }
    server.stop().await;
}
