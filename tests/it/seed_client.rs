//! The design documents' Python client (`ConsulServiceRegistry` in shared/seeds), call by call,
//! as raw HTTP: every field it reads must be there with the type it expects.

use crate::common;

use common::TestServer;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[tokio::test]
async fn the_seed_clients_calls_work_unchanged() {
    let server = TestServer::start().await;

    // initialize(): GET /v1/status/leader must be 200.
    let (status, _, leader) = server.get("/v1/status/leader").await;
    assert_eq!(status, 200);
    assert!(leader.starts_with('"') && leader.ends_with('"'), "{leader}");

    // register_service(): exactly the body the client builds.
    let (service_name, service_id, address, port) = ("orders", "orders-1", "10.0.0.1", 8080);
    let registration = json!({
        "ID": service_id,
        "Name": service_name,
        "Address": address,
        "Port": port,
        "Tags": ["v1"],
        "Meta": {"team": "trading"},
        "Check": {
            "HTTP": format!("http://{address}:{port}/health"),
            "Interval": "10s",
            "Timeout": "5s",
            "DeregisterCriticalServiceAfter": "30s"
        }
    });
    let (status, body) = server.put_json("/v1/agent/service/register", &registration).await;
    assert_eq!(status, 200, "{body}");

    // get_service_instances(): reads Service.{ID,Service,Address,Port,Tags,Meta} and the status of
    // the check whose CheckID is "service:<ID>".
    let data = server.get_json(&format!("/v1/health/service/{service_name}")).await;
    let entries = data.as_array().expect("a list");
    assert_eq!(entries.len(), 1);
    let service = &entries[0]["Service"];
    let checks = entries[0]["Checks"].as_array().expect("Checks is a list");
    assert_eq!(service["ID"], service_id);
    assert_eq!(service["Service"], service_name);
    assert_eq!(service["Address"], address);
    assert_eq!(service["Port"], port);
    assert_eq!(service["Tags"], json!(["v1"]));
    assert_eq!(service["Meta"], json!({"team": "trading"}));
    let own: Vec<&Value> = checks
        .iter()
        .filter(|c| c["CheckID"] == format!("service:{service_id}"))
        .collect();
    assert_eq!(
        own.len(),
        1,
        "the client finds its check by CheckID service:<ID>: {checks:?}"
    );
    assert_eq!(
        own[0]["Status"], "critical",
        "an HTTP check is critical until it first passes"
    );

    // get_service_health(): /v1/health/checks/<id> with CheckID, Status, Output and LastUpdate
    // (parsed by datetime.fromisoformat after replacing Z).
    let checks = server.get_json(&format!("/v1/health/checks/{service_id}")).await;
    let check = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["CheckID"] == format!("service:{service_id}"))
        .expect("the service check");
    assert!(check["Status"].is_string());
    assert!(check["Output"].is_string());
    let last_update = check["LastUpdate"].as_str().expect("LastUpdate is a string");
    let parsed = OffsetDateTime::parse(last_update, &Rfc3339).expect("LastUpdate is RFC 3339");
    assert!((OffsetDateTime::now_utc() - parsed).whole_seconds().abs() < 60);
    let fraction = last_update
        .split('.')
        .nth(1)
        .map_or(0, |f| f.trim_end_matches('Z').len());
    assert!(
        fraction <= 6,
        "Python's fromisoformat reads at most microseconds: {last_update}"
    );

    // list_services(): the keys of /v1/catalog/services.
    let services = server.get_json("/v1/catalog/services").await;
    assert!(services.as_object().unwrap().contains_key(service_name));

    // deregister_service()
    let (status, body) = server.put(&format!("/v1/agent/service/deregister/{service_id}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        server.get_json(&format!("/v1/health/service/{service_name}")).await,
        json!([])
    );
    server.stop().await;
}
