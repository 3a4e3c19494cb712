//! The Consul-compatible HTTP API: shapes, status codes, field casing, and bad input.

use crate::common;

use std::time::Duration;

use common::TestServer;
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

#[tokio::test]
async fn register_list_get_and_deregister() {
    let server = TestServer::start().await;
    server
        .register(json!({
            "ID": "orders-1", "Name": "orders", "Address": "10.0.0.1", "Port": 8080,
            "Tags": ["primary", "v2"], "Meta": {"version": "2.1"},
            "Weights": {"Passing": 10, "Warning": 1}
        }))
        .await;

    let services = server.get_json("/v1/agent/services").await;
    let s = &services["orders-1"];
    assert_eq!(s["ID"], "orders-1");
    assert_eq!(s["Service"], "orders");
    assert_eq!(s["Address"], "10.0.0.1");
    assert_eq!(s["Port"], 8080);
    assert_eq!(s["Tags"], json!(["primary", "v2"]));
    assert_eq!(s["Meta"], json!({"version": "2.1"}));
    assert_eq!(s["Weights"], json!({"Passing": 10, "Warning": 1}));

    let one = server.get_json("/v1/agent/service/orders-1").await;
    assert_eq!(one["Service"], "orders");
    let (status, _, body) = server.get("/v1/agent/service/nope").await;
    assert_eq!(status, 404, "{body}");

    // Re-registering the same ID replaces the instance.
    server
        .register(json!({"ID": "orders-1", "Name": "orders", "Address": "10.0.0.9", "Port": 9090}))
        .await;
    let one = server.get_json("/v1/agent/service/orders-1").await;
    assert_eq!(one["Address"], "10.0.0.9");
    assert_eq!(one["Port"], 9090);
    assert_eq!(one["Tags"], json!([]));
    assert_eq!(
        server.get_json("/v1/agent/services").await.as_object().unwrap().len(),
        1
    );

    let (status, body) = server.put("/v1/agent/service/deregister/orders-1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.get_json("/v1/agent/services").await, json!({}));
    let (status, body) = server.put("/v1/agent/service/deregister/orders-1").await;
    assert_eq!(status, 404, "deregistering an unknown ID: {body}");
    server.stop().await;
}

#[tokio::test]
async fn id_defaults_to_name_and_lowercase_snake_case_fields_are_accepted() {
    let server = TestServer::start().await;
    // What py-consul sends: lower-case keys, snake_case for compound names.
    server
        .register(json!({
            "name": "payments", "port": 7000, "address": "10.9.0.1", "tags": ["blue"],
            "enable_tag_override": true,
            "tagged_addresses": {"lan": {"address": "10.9.0.1", "port": 7000}},
            "checks": [{"ttl": "30s", "status": "passing", "deregister_critical_service_after": "90s"}]
        }))
        .await;
    let s = server.get_json("/v1/agent/service/payments").await;
    assert_eq!(s["ID"], "payments", "ID defaults to Name");
    assert_eq!(s["EnableTagOverride"], true);
    assert_eq!(
        s["TaggedAddresses"]["lan"],
        json!({"Address": "10.9.0.1", "Port": 7000})
    );
    let checks = server.get_json("/v1/health/checks/payments").await;
    assert_eq!(
        checks[0]["CheckID"], "service:payments",
        "one check in Checks gets service:<id>"
    );
    assert_eq!(checks[0]["Status"], "passing");
    assert_eq!(checks[0]["Type"], "ttl");
    assert_eq!(checks[0]["Definition"]["DeregisterCriticalServiceAfter"], "1m30s");
    server.stop().await;
}

#[tokio::test]
async fn check_ids_follow_consul() {
    let server = TestServer::start().await;
    server
        .register(json!({"Name": "api", "ID": "api-1", "Port": 80, "Checks": [
            {"TTL": "10s"},
            {"TCP": "127.0.0.1:80", "Interval": "5s"},
            {"CheckID": "custom", "HTTP": "http://127.0.0.1/health", "Interval": "10s", "Timeout": "30s"}
        ]}))
        .await;
    let checks = server.get_json("/v1/agent/checks").await;
    let mut ids: Vec<&String> = checks.as_object().unwrap().keys().collect();
    ids.sort();
    assert_eq!(ids, ["custom", "service:api-1:1", "service:api-1:2"]);
    assert_eq!(
        checks["custom"]["Status"], "critical",
        "checks start critical, as in Consul"
    );
    assert_eq!(
        checks["custom"]["Timeout"], "10s",
        "the timeout never exceeds the interval"
    );
    assert_eq!(checks["service:api-1:2"]["Interval"], "5s");
    assert_eq!(checks["service:api-1:2"]["Timeout"], "5s");

    // Another instance may not take a check ID that is in use.
    let (status, body) = server
        .put_json(
            "/v1/agent/service/register",
            &json!({"Name": "api", "ID": "api-2", "Check": {"CheckID": "custom", "TTL": "5s"}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body, "check ID \"custom\" already belongs to service instance \"api-1\"",
        "the IDs, not Rust's debug text"
    );
    server.stop().await;
}

/// `DeregisterCriticalServiceAfter: "0s"` (or 0) means never, as in Consul: the instance stays
/// however long its check is critical.
#[tokio::test]
async fn deregister_critical_service_after_zero_is_off() {
    let server = TestServer::start().await;
    for (id, after) in [
        ("zero-string", json!("0s")),
        ("zero-number", json!(0)),
        ("zero-plain", json!("0")),
    ] {
        server
            .register(json!({"Name": "keep", "ID": id, "Check": {
                "TTL": "1h", "Status": "critical", "DeregisterCriticalServiceAfter": after}}))
            .await;
    }
    // A real reaper at 1 s next to them, to know when one has had its chance.
    server
        .register(json!({"Name": "reaped", "ID": "reaped-1", "Check": {
            "TTL": "1h", "Status": "critical", "DeregisterCriticalServiceAfter": "1s"}}))
        .await;
    common::wait_for("the 1 s instance to be reaped", async || {
        server.get("/v1/agent/service/reaped-1").await.0 == 404
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let services = server.get_json("/v1/agent/services").await;
    let mut ids: Vec<&String> = services.as_object().unwrap().keys().collect();
    ids.sort();
    assert_eq!(ids, ["zero-number", "zero-plain", "zero-string"], "{services}");
    let checks = server.get_json("/v1/agent/checks").await;
    for check in checks.as_object().unwrap().values() {
        assert!(
            check["Definition"].get("DeregisterCriticalServiceAfter").is_none(),
            "{check}"
        );
    }
    server.stop().await;
}

/// Bodies as py-consul, Spring Cloud Consul and Nomad send them: fields Consul defines that
/// sextant does not use are accepted and ignored, so real clients keep working.
#[tokio::test]
async fn fields_consul_defines_and_sextant_ignores_are_accepted() {
    let server = TestServer::start().await;
    let bodies = [
        // py-consul 1.8.0: lower-case keys, the one check in a `checks` list.
        r#"{"name": "web", "enabletagoverride": true, "id": "web-1", "address": "10.0.0.5", "port": 8080, "tags": ["v1", "primary"], "meta": {"version": "1.0"}, "checks": [{"http": "http://10.0.0.5:8080/health", "interval": "10s", "timeout": "5s", "DeregisterCriticalServiceAfter": "90m", "header": {"X-Foo": ["bar"]}}], "weights": {"Passing": 10, "Warning": 1}}"#,
        r#"{"name": "worker", "id": "worker-1", "port": 9000, "checks": [{"ttl": "30s"}]}"#,
        r#"{"name": "db", "id": "db-1", "address": "10.0.0.6", "port": 5432, "tags": ["pg"], "checks": [{"tcp": "10.0.0.6:5432", "interval": "10s", "timeout": "2s", "DeregisterCriticalServiceAfter": "1m"}]}"#,
        // Spring Cloud Consul 4.x (Gson: nulls left out) and 5.x (Jackson: every null sent).
        r#"{"ID":"orders-8080","Name":"orders","Tags":[],"Address":"10.0.0.5","Meta":{"secure":"false"},"Port":8080,"Check":{"Interval":"10s","HTTP":"http://10.0.0.5:8080/actuator/health","Header":{},"Timeout":"5s","DeregisterCriticalServiceAfter":"90m","TLSSkipVerify":true}}"#,
        r#"{"ID":"orders-8081","Name":"orders","Tags":[],"Address":"10.0.0.5","Meta":{"secure":"false"},"Port":8081,"EnableTagOverride":null,"Check":{"Args":null,"DockerContainerID":null,"Shell":null,"Interval":"10s","TTL":null,"HTTP":"http://10.0.0.5:8081/actuator/health","Method":null,"Header":{},"TCP":null,"Timeout":null,"DeregisterCriticalServiceAfter":null,"TLSSkipVerify":null,"Status":null,"GRPC":null,"GRPCUseTLS":null},"Checks":null}"#,
        r#"{"ID":"orders-8082","Name":"orders","Tags":[],"Address":"10.0.0.5","Meta":{"secure":"false"},"Port":8082,"EnableTagOverride":null,"Check":{"Args":null,"DockerContainerID":null,"Shell":null,"Interval":null,"TTL":"30s","HTTP":null,"Method":null,"Header":null,"TCP":null,"Timeout":null,"DeregisterCriticalServiceAfter":null,"TLSSkipVerify":null,"Status":null,"GRPC":null,"GRPCUseTLS":null},"Checks":null}"#,
        // Nomad (Go's encoding/json: `Check` is always there, null; a trailing newline).
        "{\"ID\":\"_nomad-task-8b3c2f1e-server-web-api-http\",\"Name\":\"web-api\",\"Tags\":[\"v1\",\"urlprefix-/api\"],\"Port\":23456,\"Address\":\"10.0.0.5\",\"Meta\":{\"external-source\":\"nomad\",\"version\":\"1.2\"},\"Check\":null,\"Checks\":[{\"CheckID\":\"_nomad-check-6f0c4bd3\",\"Name\":\"service: \\\"web-api\\\" check\",\"Interval\":\"10s\",\"Timeout\":\"2s\",\"HTTP\":\"http://10.0.0.5:23456/health\"}]}\n",
        r#"{"ID":"_nomad-task-1c9e7a4b-group-cache-redis-db","Name":"redis","Tags":["cache"],"Port":6379,"Address":"10.0.0.6","EnableTagOverride":true,"Meta":{"external-source":"nomad"},"Check":null,"Checks":[{"CheckID":"_nomad-check-0a1b2c3d","Name":"redis-alive","Interval":"10s","Timeout":"2s","TCP":"10.0.0.6:6379","SuccessBeforePassing":2,"FailuresBeforeCritical":3,"FailuresBeforeWarning":1,"TLSServerName":"","GRPCUseTLS":false}],"Namespace":"team-a"}"#,
        // Consul's fields for Connect, namespaces, locality and sockets: accepted, ignored.
        r#"{"Name": "conn", "ID": "conn-1", "Port": 80, "Connect": {"Native": false}, "Proxy": null, "Namespace": "default", "Partition": "default", "Locality": {"Region": "r1", "Zone": "z1"}, "SocketPath": "", "Token": "", "Check": {"TTL": "10s", "OutputMaxSize": 4096, "DisableRedirects": false, "TCPUseTLS": false, "H2PingUseTLS": false}}"#,
    ];
    for body in bodies {
        let (status, text) = server.put_raw("/v1/agent/service/register", body).await;
        assert_eq!(status, 200, "{body}: {text}");
    }
    let services = server.get_json("/v1/agent/services").await;
    assert_eq!(services.as_object().unwrap().len(), bodies.len(), "{services}");
    assert_eq!(services["web-1"]["Weights"]["Passing"], 10);
    assert_eq!(services["orders-8082"]["Port"], 8082);
    // Nomad's script checks report through check/update, both fields always sent.
    let (status, text) = server
        .put_raw(
            "/v1/agent/check/update/service:orders-8082",
            r#"{"Status":"passing","Output":"OK\n"}"#,
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = server
        .put_raw(
            "/v1/agent/check/update/service:orders-8082",
            r#"{"Status":"passing","Ouput":"OK"}"#,
        )
        .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("did you mean `Output`?"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn ttl_check_updates_set_status_and_output() {
    let server = TestServer::start().await;
    server
        .register(json!({"Name": "worker", "Port": 1, "Check": {"TTL": "30s"}}))
        .await;
    let status_of = |v: &Value| v[0]["Checks"][1]["Status"].as_str().unwrap().to_owned();

    let (s, _) = server.put("/v1/agent/check/pass/service:worker?note=all%20good").await;
    assert_eq!(s, 200);
    let health = server.get_json("/v1/health/service/worker").await;
    assert_eq!(status_of(&health), "passing");
    assert_eq!(health[0]["Checks"][1]["Output"], "all good");

    let (s, body) = server
        .put_json(
            "/v1/agent/check/update/service:worker",
            &json!({"Status": "warning", "Output": "slow"}),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let health = server.get_json("/v1/health/service/worker").await;
    assert_eq!(status_of(&health), "warning");
    assert_eq!(health[0]["Checks"][1]["Output"], "slow");

    let (s, body) = server
        .put_json("/v1/agent/check/update/service:worker", &json!({"Status": "dead"}))
        .await;
    assert_eq!(s, 400, "{body}");
    let (s, body) = server.put("/v1/agent/check/pass/nosuchcheck").await;
    assert_eq!(s, 404, "{body}");
    server.stop().await;
}

#[tokio::test]
async fn catalog_and_health_views() {
    let server = TestServer::start().await;
    let reg = |id: &str, addr: &str, tags: Value, status: &str| {
        json!({"Name": "orders", "ID": id, "Address": addr, "Port": 8080, "Tags": tags,
               "Check": {"TTL": "60s", "Status": status}})
    };
    server
        .register(reg("o1", "10.0.0.1", json!(["primary"]), "passing"))
        .await;
    server
        .register(reg("o2", "10.0.0.2", json!(["replica"]), "warning"))
        .await;
    server
        .register(reg("o3", "10.0.0.3", json!(["replica"]), "critical"))
        .await;
    server.register(json!({"Name": "billing", "Port": 1})).await;

    let services = server.get_json("/v1/catalog/services").await;
    assert_eq!(services, json!({"billing": [], "orders": ["primary", "replica"]}));

    let catalog = server.get_json("/v1/catalog/service/orders").await;
    assert_eq!(
        catalog.as_array().unwrap().len(),
        3,
        "the catalog lists instances whatever their health"
    );
    let first = &catalog[0];
    for field in [
        "ID",
        "Node",
        "Address",
        "Datacenter",
        "ServiceID",
        "ServiceName",
        "ServiceAddress",
        "ServicePort",
        "ServiceTags",
        "ServiceMeta",
        "ServiceWeights",
        "CreateIndex",
        "ModifyIndex",
    ] {
        assert!(first.get(field).is_some(), "catalog entry has {field}: {first}");
    }
    assert_eq!(first["Datacenter"], "trading-dc");
    let tagged = server.get_json("/v1/catalog/service/orders?tag=replica").await;
    assert_eq!(tagged.as_array().unwrap().len(), 2);

    let all = server.get_json("/v1/health/service/orders").await;
    assert_eq!(all.as_array().unwrap().len(), 3);
    let entry = &all[0];
    assert_eq!(entry["Node"]["Node"], "testnode");
    assert_eq!(entry["Service"]["ID"], "o1");
    assert_eq!(entry["Service"]["Service"], "orders");
    assert_eq!(entry["Checks"][0]["CheckID"], "serfHealth");
    assert_eq!(entry["Checks"][1]["CheckID"], "service:o1");

    let passing = server.get_json("/v1/health/service/orders?passing").await;
    let ids: Vec<&str> = passing
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Service"]["ID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["o1"], "?passing drops warning and critical instances");
    let passing_true = server
        .get_json("/v1/health/service/orders?passing=true&tag=primary")
        .await;
    assert_eq!(passing_true.as_array().unwrap().len(), 1);
    let replica = server.get_json("/v1/health/service/orders?tag=replica").await;
    assert_eq!(replica.as_array().unwrap().len(), 2);
    assert_eq!(server.get_json("/v1/health/service/nosuch").await, json!([]));

    let checks = server.get_json("/v1/health/checks/orders").await;
    assert_eq!(checks.as_array().unwrap().len(), 3);

    let (_, headers, _) = server.get("/v1/health/service/orders").await;
    let index: u64 = headers["X-Consul-Index"].to_str().unwrap().parse().unwrap();
    assert!(index > 0);
    assert_eq!(headers["X-Consul-KnownLeader"], "true");
    server.stop().await;
}

#[tokio::test]
async fn index_grows_with_every_change() {
    let server = TestServer::start().await;
    let index = || async {
        let (_, headers, _) = server.get("/v1/catalog/services").await;
        headers["X-Consul-Index"].to_str().unwrap().parse::<u64>().unwrap()
    };
    let i0 = index().await;
    server.register(json!({"Name": "a", "Port": 1})).await;
    let i1 = index().await;
    server.register(json!({"Name": "b", "Port": 1})).await;
    let i2 = index().await;
    server.put("/v1/agent/service/deregister/a").await;
    let i3 = index().await;
    assert!(i0 < i1 && i1 < i2 && i2 < i3, "{i0} {i1} {i2} {i3}");
    server.stop().await;
}

#[tokio::test]
async fn status_leader_and_agent_self() {
    let server = TestServer::start().await;
    let (status, _, body) = server.get("/v1/status/leader").await;
    assert_eq!(status, 200);
    let leader: String = serde_json::from_str(&body).expect("a quoted string");
    assert!(
        leader.parse::<std::net::SocketAddr>().is_ok(),
        "leader is ip:port, got {leader}"
    );

    let me = server.get_json("/v1/agent/self").await;
    assert_eq!(me["Config"]["Datacenter"], "trading-dc");
    assert_eq!(me["Config"]["NodeName"], "testnode");

    let (status, _, body) = server.get("/v1/no/such/endpoint").await;
    assert_eq!(status, 404);
    assert!(body.contains("/v1/no/such/endpoint"), "{body}");
    server.stop().await;
}

/// Each bad registration is refused with 400 and a message naming the field; nothing is stored.
#[tokio::test]
async fn bad_registrations_are_refused_and_store_nothing() {
    let server = TestServer::start().await;
    let cases: Vec<(&str, String)> = vec![
        ("Request decode failed", "{\"Name\": \"x\",".into()),
        ("Request decode failed", "".into()),
        ("must be a JSON object", "[1, 2]".into()),
        ("Name", json!({"Port": 80}).to_string()),
        ("Name", json!({"Name": "bad_name"}).to_string()),
        ("Name", json!({"Name": "has.dot"}).to_string()),
        ("Name", json!({"Name": "x".repeat(64)}).to_string()),
        ("Name", json!({"Name": 42}).to_string()),
        ("ID", json!({"Name": "ok", "ID": "a/b"}).to_string()),
        (
            "Tags[1]",
            json!({"Name": "ok", "Tags": ["fine", "has space"]}).to_string(),
        ),
        ("Tags", json!({"Name": "ok", "Tags": "primary"}).to_string()),
        ("Port", json!({"Name": "ok", "Port": 70000}).to_string()),
        ("Port", json!({"Name": "ok", "Port": -1}).to_string()),
        ("Port", json!({"Name": "ok", "Port": "80"}).to_string()),
        (
            "Address",
            json!({"Name": "ok", "Address": "not an address!"}).to_string(),
        ),
        ("Address", json!({"Name": "ok", "Address": "10.0.0.256"}).to_string()),
        ("Meta", json!({"Name": "ok", "Meta": {"bad key": "v"}}).to_string()),
        (
            "Weights.Passing",
            json!({"Name": "ok", "Weights": {"Passing": 0}}).to_string(),
        ),
        (
            "Check.Interval",
            json!({"Name": "ok", "Check": {"HTTP": "http://x/", "Interval": "10 seconds"}}).to_string(),
        ),
        (
            "Check.Interval",
            json!({"Name": "ok", "Check": {"TCP": "x:80"}}).to_string(),
        ),
        ("Check.TTL", json!({"Name": "ok", "Check": {"TTL": "soon"}}).to_string()),
        (
            "Check.HTTP",
            json!({"Name": "ok", "Check": {"HTTP": "not a url", "Interval": "10s"}}).to_string(),
        ),
        (
            "Check.TCP",
            json!({"Name": "ok", "Check": {"TCP": "no-port", "Interval": "10s"}}).to_string(),
        ),
        (
            "Check.Args",
            json!({"Name": "ok", "Check": {"Args": ["/bin/true"], "Interval": "10s"}}).to_string(),
        ),
        (
            "Checks[1].GRPC",
            json!({"Name": "ok", "Checks": [{"TTL": "5s"}, {"GRPC": "no-port/svc", "Interval": "1s"}]}).to_string(),
        ),
        (
            "Check: must have one of HTTP, TCP, TTL or GRPC",
            json!({"Name": "ok", "Check": {"Interval": "10s"}}).to_string(),
        ),
        (
            "Check.Status",
            json!({"Name": "ok", "Check": {"TTL": "5s", "Status": "fine"}}).to_string(),
        ),
        // Misspelt fields: named, with the closest known one.
        (
            "unknown field `Adress`; did you mean `Address`?",
            json!({"Name": "ok", "Adress": "10.0.0.9"}).to_string(),
        ),
        (
            "unknown field `Chek`; did you mean `Check`?",
            json!({"Name": "ok", "Chek": {"TTL": "5s"}}).to_string(),
        ),
        (
            "Check: unknown field `Intervall`; did you mean `Interval`?",
            json!({"Name": "ok", "Check": {"HTTP": "http://x/", "Intervall": "10s"}}).to_string(),
        ),
        (
            "Weights: unknown field `Pasing`; did you mean `Passing`?",
            json!({"Name": "ok", "Weights": {"Pasing": 3}}).to_string(),
        ),
        (
            "unknown field `Colour`",
            json!({"Name": "ok", "Colour": "blue"}).to_string(),
        ),
        // Durations: numbers are nanoseconds, so 30 is refused; a range check for numbers too.
        ("Check.TTL", json!({"Name": "ok", "Check": {"TTL": 30}}).to_string()),
        (
            "Go strings",
            json!({"Name": "ok", "Check": {"TTL": "500us"}}).to_string(),
        ),
        ("Check.TTL", json!({"Name": "ok", "Check": {"TTL": "0s"}}).to_string()),
        (
            "Check.Interval",
            json!({"Name": "ok", "Check": {"TCP": "x:80", "Interval": 10}}).to_string(),
        ),
        (
            "Check.Timeout",
            json!({"Name": "ok", "Check": {"TCP": "x:80", "Interval": "10s", "Timeout": 5}}).to_string(),
        ),
        (
            "Check.TTL",
            json!({"Name": "ok", "Check": {"TTL": 9_223_372_036_854_775_807_u64}}).to_string(),
        ),
        (
            "Check.DeregisterCriticalServiceAfter",
            json!({"Name": "ok", "Check": {"TTL": "5s", "DeregisterCriticalServiceAfter": "1ns"}}).to_string(),
        ),
        (
            "Check.DeregisterCriticalServiceAfter",
            json!({"Name": "ok", "Check": {"TTL": "5s", "DeregisterCriticalServiceAfter": "500ms"}}).to_string(),
        ),
        // IDs a client that normalises paths cannot deregister, or that read other than they are.
        ("ID", json!({"Name": "ok", "ID": "."}).to_string()),
        ("ID", json!({"Name": "ok", "ID": ".."}).to_string()),
        ("ID", json!({"Name": "ok", "ID": "ok-\u{202e}1"}).to_string()),
        ("ID", json!({"Name": "ok", "ID": "ok-\u{200b}1"}).to_string()),
        (
            "Check.Name",
            json!({"Name": "ok", "Check": {"TTL": "5s", "Name": "a\u{2066}b"}}).to_string(),
        ),
        (
            "Check.CheckID",
            json!({"Name": "ok", "Check": {"TTL": "5s", "CheckID": "serfHealth"}}).to_string(),
        ),
        (
            "Check.CheckID",
            json!({"Name": "ok", "Check": {"TTL": "5s", "CheckID": "_service_maintenance:ok"}}).to_string(),
        ),
        (
            "Check.CheckID",
            json!({"Name": "ok", "Check": {"TTL": "5s", "CheckID": "_node_maintenance"}}).to_string(),
        ),
        // A field given twice, exactly or in another casing: one rule, refused.
        (
            "field `Address` is given twice",
            r#"{"Name": "ok", "Address": "10.0.0.1", "Address": "10.0.0.2"}"#.into(),
        ),
        (
            "field `name` is given twice",
            r#"{"Name": "ok", "name": "other"}"#.into(),
        ),
        (
            "is given twice",
            r#"{"Name": "ok", "Check": {"TTL": "5s", "ttl": "10s"}}"#.into(),
        ),
    ];
    for (expected, body) in &cases {
        let (status, message) = server.put_raw("/v1/agent/service/register", body.clone()).await;
        assert_eq!(status, 400, "{body} → {status} {message}");
        assert!(
            message.contains(expected),
            "{body}: message {message:?} should name {expected:?}"
        );
    }
    assert_eq!(
        server.get_json("/v1/agent/services").await,
        json!({}),
        "nothing was stored"
    );
    assert_eq!(server.get_json("/v1/agent/checks").await, json!({}));
    let dns = common::dns::udp(server.dns, "ok.service.trading-dc.", RecordType::A).await;
    assert_eq!(common::dns::rcode(&dns), hickory_proto::op::ResponseCode::NXDomain);
    server.stop().await;
}

#[tokio::test]
async fn oversized_body_is_413() {
    let server = TestServer::start().await;
    let huge = format!(
        "{{\"Name\": \"x\", \"Meta\": {{\"k\": \"{}\"}}}}",
        "v".repeat(1024 * 1024 + 10)
    );
    let (status, body) = server.put_raw("/v1/agent/service/register", huge).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(server.get_json("/v1/agent/services").await, json!({}));
    server.stop().await;
}

#[tokio::test]
async fn free_form_tags_are_kept_and_dns_label_tags_are_queryable() {
    // Consul clients send tags such as "secure=false" (Spring Cloud) or "traefik.enable=true";
    // they are stored and listed, and only label-shaped tags can be asked for in DNS.
    let server = TestServer::start().await;
    server
        .register(json!({"Name": "web", "Address": "10.5.0.1", "Port": 80, "Tags": ["secure=false", "traefik.enable=true", "blue"]}))
        .await;
    let s = server.get_json("/v1/agent/service/web").await;
    assert_eq!(s["Tags"], json!(["secure=false", "traefik.enable=true", "blue"]));
    let reply = common::dns::udp(server.dns, "blue.web.service.trading-dc.", RecordType::A).await;
    assert_eq!(common::dns::addresses(&reply).len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn wrong_method_is_405() {
    let server = TestServer::start().await;
    let resp = server
        .http
        .get(server.url("/v1/agent/service/register"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    server.stop().await;
}

#[tokio::test]
async fn query_parameters_are_ignored_unless_honouring_them_would_change_the_answer() {
    let server = TestServer::start().await;
    server
        .register(json!({"Name": "orders", "ID": "orders-1", "Address": "10.0.0.1",
                         "Check": {"TTL": "1m", "Status": "passing"}}))
        .await;
    let plain = server.get_json("/v1/health/service/orders?passing").await;
    // What VictoriaMetrics, Prometheus and py-consul send along, with nothing to do.
    for extra in [
        "dc=trading-dc",
        "stale",
        "consistent",
        "cached",
        "near=_agent",
        "unknown=1",
    ] {
        let (status, _, body) = server.get(&format!("/v1/health/service/orders?passing&{extra}")).await;
        assert_eq!(status, 200, "{extra}: {body}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            plain,
            "{extra}"
        );
    }
    // `node-meta` is honoured: this node carries no `rack`.
    assert_eq!(
        server
            .get_json("/v1/health/service/orders?passing&node-meta=rack:r1")
            .await,
        serde_json::json!([])
    );
    // These would narrow or redirect the answer: refused, rather than answered wider.
    for (path, says) in [
        (
            "/v1/health/service/orders?filter=Service.Port%20%3D%3D%2080",
            "filter expressions are not supported",
        ),
        ("/v1/catalog/services?filter=x", "filter expressions are not supported"),
        ("/v1/catalog/services?dc=eu-west", "No path to datacenter \"eu-west\""),
    ] {
        let (status, _, body) = server.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(says), "{path}: {body}");
    }
    let (status, _, body) = server.get("/v1/event/list?name=orders").await;
    assert_eq!(status, 404);
    assert_eq!(body, "no such endpoint: /v1/event/list");
    server.stop().await;
}

#[tokio::test]
async fn slow_request_headers_are_cut_off_but_long_blocking_queries_are_not() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let timeout = Duration::from_secs(2);
    let server = TestServer::start_with(sextant::Config {
        http_header_timeout: timeout,
        ..common::test_config()
    })
    .await;
    server
        .register(json!({"Name": "orders", "ID": "orders-1", "Address": "10.0.0.1"}))
        .await;
    let (_, headers, _) = server.get("/v1/health/service/orders").await;
    let index = headers["X-Consul-Index"].to_str().unwrap().to_owned();

    // A blocking query waiting longer than the header timeout: its headers came in time.
    let (http, url) = (
        server.http.clone(),
        server.url(&format!(
            "/v1/health/service/orders?index={index}&wait={}s",
            timeout.as_secs() + 1
        )),
    );
    let started = std::time::Instant::now();
    let watcher = tokio::spawn(async move {
        let response = http.get(url).timeout(Duration::from_secs(60)).send().await.unwrap();
        (response.status().as_u16(), started.elapsed())
    });

    // A client that sends half a request line and then nothing (slowloris).
    let mut slow = tokio::net::TcpStream::connect(server.app().http_addr()).await.unwrap();
    slow.write_all(b"GET /v1/catalog/services HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(timeout + Duration::from_secs(5), async {
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {} // a 408 or similar before the close is fine
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "a connection without complete headers was held past {timeout:?}"
    );
    let cut_after = started.elapsed();
    assert!(
        cut_after >= timeout - Duration::from_millis(500),
        "cut after {cut_after:?}"
    );

    let (status, waited) = watcher.await.unwrap();
    assert_eq!(status, 200);
    assert!(
        waited > timeout,
        "the blocking query returned after {waited:?}, before its wait"
    );
    server.stop().await;
}

/// The walk-through's body, `examples/register.json`, registers as the README shows it.
#[tokio::test]
async fn the_walk_through_example_registers() {
    let server = TestServer::start().await;
    let body = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/register.json")).unwrap();
    let (status, text) = server.put_raw("/v1/agent/service/register", body).await;
    assert_eq!(status, 200, "{text}");
    let reply = common::dns::udp(server.dns, "orders.service.trading-dc.", RecordType::SRV).await;
    assert_eq!(
        common::dns::srvs(&reply),
        [(8080, 10, "0a000001.addr.trading-dc.".to_string())]
    );
    let checks = server.get_json("/v1/agent/checks").await;
    assert_eq!(checks["service:orders-1"]["Status"], "passing");
    assert_eq!(checks["service:orders-1"]["Definition"]["TTL"], "10m0s");
    server.stop().await;
}

/// Load balancers poll an instance's aggregated health: 200 passing, 429 warning, 503
/// critical, 404 unknown; Consul's body, or the status as text with `?format=text`.
#[tokio::test]
async fn agent_health_endpoints_answer_with_the_aggregated_status() {
    let server = TestServer::start().await;
    server
        .register(json!({"Name": "web", "ID": "web-1", "Port": 80, "Check": {"TTL": "1h", "Status": "passing"}}))
        .await;
    server
        .register(json!({"Name": "web", "ID": "web-2", "Port": 81, "Check": {"TTL": "1h", "Status": "warning"}}))
        .await;

    let (status, headers, body) = server.get("/v1/agent/health/service/name/web").await;
    assert_eq!(status, 429, "the worst instance is warning: {body}");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["AggregatedStatus"], "passing");
    assert_eq!(list[0]["Service"]["ID"], "web-1");
    assert_eq!(list[1]["AggregatedStatus"], "warning");
    assert_eq!(list[1]["Checks"][0]["CheckID"], "service:web-2");
    let (status, headers, body) = server.get("/v1/agent/health/service/name/web?format=text").await;
    assert_eq!((status.as_u16(), body.as_str()), (429, "warning"));
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/plain"));

    let (status, _, body) = server.get("/v1/agent/health/service/id/web-1").await;
    assert_eq!(status, 200);
    let info: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["AggregatedStatus"], "passing");
    assert_eq!(info["Service"]["Service"], "web");
    let (status, _, body) = server.get("/v1/agent/health/service/id/web-1?format=text").await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "passing"));

    let (status, _) = server.put("/v1/agent/check/fail/service:web-2").await;
    assert_eq!(status, 200);
    let (status, _, body) = server.get("/v1/agent/health/service/name/web?format=text").await;
    assert_eq!((status.as_u16(), body.as_str()), (503, "critical"));
    let (status, _, _) = server.get("/v1/agent/health/service/id/web-2").await;
    assert_eq!(status, 503);

    let (status, _, body) = server.get("/v1/agent/health/service/name/nope").await;
    assert_eq!((status.as_u16(), body.as_str()), (404, "[]"));
    let (status, _, body) = server.get("/v1/agent/health/service/name/nope?format=text").await;
    assert_eq!((status.as_u16(), body.as_str()), (404, "ServiceName nope Not Found"));
    let (status, _, body) = server.get("/v1/agent/health/service/id/nope").await;
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["AggregatedStatus"],
        "critical"
    );
    let (status, _, body) = server.get("/v1/agent/health/service/id/nope?format=text").await;
    assert_eq!((status.as_u16(), body.as_str()), (404, "ServiceId nope not found"));

    let (status, _, body) = server.get("/v1/catalog/datacenters").await;
    assert_eq!((status.as_u16(), body.as_str()), (200, r#"["trading-dc"]"#));
    server.stop().await;
}

/// Maintenance mode: a critical `_service_maintenance:<id>` check takes the instance out of DNS
/// and `?passing` until it is taken off; it survives a re-registration and a restart.
#[tokio::test]
async fn maintenance_mode_takes_an_instance_out_and_survives_a_restart() {
    use common::dns::{addresses, udp};
    let server = TestServer::start().await;
    for (id, address) in [("web-1", "10.0.0.1"), ("web-2", "10.0.0.2")] {
        server
            .register(json!({"Name": "web", "ID": id, "Address": address, "Port": 80}))
            .await;
    }
    let answered = async |server: &TestServer| {
        let mut ips = addresses(&udp(server.dns, "web.service.trading-dc.", RecordType::A).await);
        ips.sort();
        ips
    };
    let maintenance = "/v1/agent/service/maintenance/web-1";
    let (status, body) = server
        .put(&format!("{maintenance}?enable=true&reason=deploying+v2"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(answered(&server).await, [common::ip("10.0.0.2")], "web-1 is out of DNS");
    let passing = server.get_json("/v1/health/service/web?passing").await;
    assert_eq!(passing.as_array().unwrap().len(), 1);
    let checks = server.get_json("/v1/agent/checks").await;
    let check = &checks["_service_maintenance:web-1"];
    assert_eq!(check["Status"], "critical", "{checks}");
    assert_eq!(check["Type"], "maintenance");
    assert_eq!(check["Notes"], "deploying v2");
    assert_eq!(check["ServiceID"], "web-1");

    // The service registers itself again (as a restarted process does): still in maintenance.
    server
        .register(json!({"Name": "web", "ID": "web-1", "Address": "10.0.0.1", "Port": 80}))
        .await;
    assert_eq!(answered(&server).await, [common::ip("10.0.0.2")]);
    // A restart of sextant keeps it.
    let data_dir = server.stop_keeping_data().await;
    let server = TestServer::start_with(sextant::Config {
        data_dir,
        ..common::test_config()
    })
    .await;
    assert_eq!(
        answered(&server).await,
        [common::ip("10.0.0.2")],
        "still out after a restart"
    );

    let (status, _) = server.put(&format!("{maintenance}?enable=false")).await;
    assert_eq!(status, 200);
    assert_eq!(
        answered(&server).await,
        [common::ip("10.0.0.1"), common::ip("10.0.0.2")]
    );
    let checks = server.get_json("/v1/agent/checks").await;
    assert!(checks.get("_service_maintenance:web-1").is_none(), "{checks}");
    let (status, _) = server.put(&format!("{maintenance}?enable=true")).await;
    assert_eq!(status, 200);
    let checks = server.get_json("/v1/agent/checks").await;
    assert!(
        checks["_service_maintenance:web-1"]["Notes"]
            .as_str()
            .unwrap()
            .contains("no reason was provided")
    );

    // An instance may not grow past 32 checks: the 33rd, a maintenance check included, is
    // refused with the rule, and nothing is stored.
    let checks: Vec<Value> = (0..32)
        .map(|n| json!({"CheckID": format!("c{n}"), "TTL": "1h"}))
        .collect();
    server
        .register(json!({"Name": "full", "ID": "full-1", "Port": 80, "Checks": checks}))
        .await;
    let (status, body) = server.put("/v1/agent/service/maintenance/full-1?enable=true").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("at most 32 checks"), "{body}");
    let (status, body) = server
        .put_json(
            "/v1/agent/check/register",
            &json!({"Name": "one more", "ServiceID": "full-1", "TTL": "1h"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        server.get_json("/v1/agent/checks").await.as_object().unwrap().len(),
        33,
        "32 on full-1, the maintenance check on web-1"
    );

    // Errors, as Consul words them.
    let (status, body) = server.put(maintenance).await;
    assert_eq!((status.as_u16(), body.as_str()), (400, "Missing value for enable"));
    let (status, body) = server.put(&format!("{maintenance}?enable=maybe")).await;
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (400, "Invalid value for enable: \"maybe\"")
    );
    let (status, body) = server.put("/v1/agent/service/maintenance/nope?enable=true").await;
    assert_eq!(status, 404);
    assert!(body.contains("No service registered with ID \"nope\""), "{body}");
    server.stop().await;
}

/// Checks registered on their own (`/v1/agent/check/register` with a `ServiceID`, as Nomad and
/// consul-esm do) run and count like the instance's own, and are deregistered by ID.
#[tokio::test]
async fn checks_registered_on_their_own_join_their_instance() {
    use common::dns::{addresses, udp};
    let server = TestServer::start().await;
    server
        .register(json!({"Name": "web", "ID": "web-1", "Address": "10.0.0.1", "Port": 80}))
        .await;
    let (status, body) = server
        .put_json(
            "/v1/agent/check/register",
            &json!({"Name": "disk", "ServiceID": "web-1", "TTL": "1h", "Notes": "free space"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let checks = server.get_json("/v1/agent/checks").await;
    assert_eq!(
        checks["disk"]["ServiceID"], "web-1",
        "the ID defaults to the name: {checks}"
    );
    assert_eq!(
        checks["disk"]["Status"], "critical",
        "critical until it reports, as in Consul"
    );
    let dns = async || addresses(&udp(server.dns, "web.service.trading-dc.", RecordType::A).await);
    assert!(dns().await.is_empty(), "the instance is critical now");
    let (status, _) = server.put("/v1/agent/check/pass/disk").await;
    assert_eq!(status, 200);
    assert_eq!(dns().await, [common::ip("10.0.0.1")]);

    // Replaced by ID; then deregistered.
    let (status, _) = server
        .put_json(
            "/v1/agent/check/register",
            &json!({"ID": "disk", "Name": "disk space", "ServiceID": "web-1", "TTL": "1h", "Status": "warning"}),
        )
        .await;
    assert_eq!(status, 200);
    let checks = server.get_json("/v1/agent/checks").await;
    assert_eq!(checks["disk"]["Name"], "disk space");
    assert_eq!(checks["disk"]["Status"], "warning");
    let (status, _) = server.put("/v1/agent/check/deregister/disk").await;
    assert_eq!(status, 200);
    assert!(server.get_json("/v1/agent/checks").await.get("disk").is_none());
    assert_eq!(dns().await, [common::ip("10.0.0.1")]);

    // Errors name what is wrong; nothing is stored.
    for (body, says) in [
        (json!({"ServiceID": "web-1", "TTL": "1h"}), "Missing check name"),
        (
            json!({"Name": "x", "ServiceID": "nope", "TTL": "1h"}),
            "ServiceID \"nope\" does not exist",
        ),
        (json!({"Name": "x", "ServiceID": "web-1"}), "HTTP, TCP, TTL or GRPC"),
        (
            json!({"Name": "x", "ServiceID": "web-1", "TTL": "1h", "Bogus": 1}),
            "Bogus",
        ),
    ] {
        let (status, text) = server.put_json("/v1/agent/check/register", &body).await;
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.contains(says), "{body}: {text}");
    }
    assert_eq!(server.get_json("/v1/agent/checks").await.as_object().unwrap().len(), 0);
    let (status, _) = server.put("/v1/agent/check/deregister/nope").await;
    assert_eq!(status, 404);
    server.stop().await;
}

/// HTTP connections are bounded, in all and per client address: a client over either limit gets
/// a 503 that names it (and the flag), and other clients are served meanwhile.
#[tokio::test]
async fn http_connections_are_bounded_per_client_and_in_all() {
    let server = TestServer::start_with(sextant::Config {
        http_max_connections: 6,
        http_max_per_client: 4,
        ..common::test_config()
    })
    .await;
    let http = server.app().http_addr();
    let from = |ip: &str| {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(std::net::SocketAddr::new(ip, 0)).unwrap();
            socket.connect(http).await.unwrap()
        }
    };
    let client_at = |ip: &str| {
        reqwest::Client::builder()
            .local_address(ip.parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap()
    };
    // Four idle connections from one address: its share.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(from("127.0.0.2").await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = client_at("127.0.0.2")
        .get(format!("http://{http}/v1/catalog/services"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.text().await.unwrap().contains("--http-max-per-client"));
    // Another address is served, and its two connections fill the server.
    let other = client_at("127.0.0.3");
    let served = other
        .get(format!("http://{http}/v1/catalog/services"))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    held.push(from("127.0.0.3").await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Six open (4 idle, reqwest's pooled one and one more): a third address is refused.
    let refused = client_at("127.0.0.4")
        .get(format!("http://{http}/v1/catalog/services"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.text().await.unwrap().contains("--http-max-connections"));
    // Connections closed free their slots.
    held.clear();
    drop(other);
    common::wait_for("a slot to free", async || {
        client_at("127.0.0.4")
            .get(format!("http://{http}/v1/catalog/services"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    server.stop().await;
}
