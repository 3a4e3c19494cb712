//! External nodes registered through the catalog (`PUT /v1/catalog/register`, as consul-esm and
//! Terraform do) and this server's node maintenance, over real HTTP and real DNS: nodes and
//! their services in every listing with their own Node and Address, checks with the status the
//! registrar gives (or probed, with a `Definition`), a critical node check taking every service
//! of the node out of DNS, bad input refused whole, and all of it kept over a restart.

use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

use crate::common::dns::{addresses, rcode, srvs, udp};
use crate::common::endpoint::HttpEndpoint;
use crate::common::{self, TestServer, wait_for};

async fn dns_a(server: &TestServer, name: &str) -> Vec<IpAddr> {
    let mut ips = addresses(&udp(server.dns, name, RecordType::A).await);
    ips.sort();
    ips
}

async fn catalog_register(server: &TestServer, body: Value) {
    let (status, text) = server.put_json("/v1/catalog/register", &body).await;
    assert_eq!((status.as_u16(), text.as_str()), (200, "true"), "{body}");
}

fn node_names(nodes: &Value) -> Vec<&str> {
    nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["Node"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn external_nodes_are_listed_answered_in_dns_and_follow_their_registrar() {
    let server = TestServer::start().await;
    server
        .register(json!({"Name": "search", "ID": "search-local", "Address": "10.0.0.9", "Port": 80}))
        .await;
    catalog_register(
        &server,
        json!({
            "Node": "google", "Address": "10.9.0.1", "NodeMeta": {"external-node": "true"},
            "Service": {"ID": "search-g", "Service": "search", "Port": 443, "Tags": ["web"]},
            "Checks": [
                {"CheckID": "google-alive", "Name": "alive", "Status": "passing", "Output": "pong"},
                {"CheckID": "search-g-https", "ServiceID": "search-g", "Status": "passing"}
            ]
        }),
    )
    .await;
    // A second service on the node, whose address is its own.
    catalog_register(
        &server,
        json!({"Node": "google", "Address": "10.9.0.1", "NodeMeta": {"external-node": "true"},
               "Service": {"ID": "maps-g", "Service": "maps", "Address": "10.9.0.2", "Port": 8443}}),
    )
    .await;

    // Listings: the node with this server's, the node's services, its checks.
    let nodes = server.get_json("/v1/catalog/nodes").await;
    assert_eq!(node_names(&nodes), ["testnode", "google"], "{nodes}");
    assert_eq!(nodes[1]["Address"], "10.9.0.1");
    assert_eq!(nodes[1]["Meta"]["external-node"], "true");
    let node = server.get_json("/v1/catalog/node/google").await;
    assert_eq!(node["Node"]["Node"], "google");
    let mut services: Vec<&String> = node["Services"].as_object().unwrap().keys().collect();
    services.sort();
    assert_eq!(services, ["maps-g", "search-g"]);
    assert_eq!(node["Services"]["search-g"]["Port"], 443);
    assert_eq!(server.get_json("/v1/catalog/node/nowhere").await, Value::Null);
    let checks = server.get_json("/v1/health/node/google").await;
    let ids: Vec<(&str, &str)> = checks
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["CheckID"].as_str().unwrap(), c["ServiceID"].as_str().unwrap()))
        .collect();
    assert_eq!(ids, [("google-alive", ""), ("search-g-https", "search-g")]);
    assert_eq!(checks[0]["Output"], "pong");
    assert_eq!(checks[0]["Type"], "");
    assert_eq!(server.get_json("/v1/health/node/nowhere").await, json!([]));

    // The service lists both instances, each with its own node.
    let catalog = server.get_json("/v1/catalog/service/search").await;
    let by_node: Vec<(&str, &str)> = catalog
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["Node"].as_str().unwrap(), e["Address"].as_str().unwrap()))
        .collect();
    assert_eq!(by_node, [("google", "10.9.0.1"), ("testnode", "127.0.0.1")]);
    assert_eq!(catalog[0]["NodeMeta"]["external-node"], "true");
    let health = server.get_json("/v1/health/service/search").await;
    assert_eq!(health[0]["Node"]["Node"], "google");
    let entry_checks: Vec<&str> = health[0]["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["CheckID"].as_str().unwrap())
        .collect();
    assert_eq!(
        entry_checks,
        ["google-alive", "search-g-https"],
        "the node's checks, then the service's"
    );
    // The agent endpoints are this server's node only.
    let agent = server.get_json("/v1/agent/services").await;
    assert!(
        agent.get("search-g").is_none() && agent.get("search-local").is_some(),
        "{agent}"
    );
    let (status, _, _) = server.get("/v1/agent/health/service/id/search-g").await;
    assert_eq!(status, 404);
    let (status, _) = server.put("/v1/agent/service/deregister/search-g").await;
    assert_eq!(status, 404, "an external service is not the agent's to deregister");

    // DNS: the service answers with the node's address (its own when it has one), the node
    // under <node>.node.<domain>.
    let search = "search.service.trading-dc.";
    assert_eq!(
        dns_a(&server, search).await,
        [common::ip("10.0.0.9"), common::ip("10.9.0.1")]
    );
    let mut ports: Vec<u16> = srvs(&udp(server.dns, search, RecordType::SRV).await)
        .into_iter()
        .map(|(port, _, _)| port)
        .collect();
    ports.sort();
    assert_eq!(ports, [80, 443]);
    assert_eq!(
        dns_a(&server, "maps.service.trading-dc.").await,
        [common::ip("10.9.0.2")]
    );
    assert_eq!(
        dns_a(&server, "google.node.trading-dc.").await,
        [common::ip("10.9.0.1")]
    );
    let nowhere = udp(server.dns, "nowhere.node.trading-dc.", RecordType::A).await;
    assert_eq!(rcode(&nowhere), ResponseCode::NXDomain);

    // The registrar says the node is down: every service of the node leaves DNS and `?passing`.
    catalog_register(
        &server,
        json!({"Node": "google", "Address": "10.9.0.1", "NodeMeta": {"external-node": "true"},
               "Check": {"CheckID": "google-alive", "Name": "alive", "Status": "critical", "Output": "timeout"}}),
    )
    .await;
    assert_eq!(dns_a(&server, search).await, [common::ip("10.0.0.9")]);
    assert_eq!(dns_a(&server, "maps.service.trading-dc.").await, Vec::<IpAddr>::new());
    let passing = server.get_json("/v1/health/service/search?passing").await;
    assert_eq!(passing.as_array().unwrap().len(), 1, "{passing}");
    assert_eq!(passing[0]["Node"]["Node"], "testnode");
    let critical = server.get_json("/v1/health/state/critical").await;
    assert_eq!(critical[0]["CheckID"], "google-alive", "{critical}");
    assert_eq!(critical[0]["Output"], "timeout");
    // And back.
    catalog_register(
        &server,
        json!({"Node": "google", "Address": "10.9.0.1", "NodeMeta": {"external-node": "true"},
               "Check": {"CheckID": "google-alive", "Name": "alive", "Status": "passing"}}),
    )
    .await;
    assert_eq!(
        dns_a(&server, "maps.service.trading-dc.").await,
        [common::ip("10.9.0.2")]
    );
    // A service's own check, critical: that service alone leaves.
    catalog_register(
        &server,
        json!({"Node": "google", "Address": "10.9.0.1", "NodeMeta": {"external-node": "true"},
               "Check": {"CheckID": "search-g-https", "ServiceID": "search-g", "Status": "critical"}}),
    )
    .await;
    assert_eq!(dns_a(&server, search).await, [common::ip("10.0.0.9")]);
    assert_eq!(
        dns_a(&server, "maps.service.trading-dc.").await,
        [common::ip("10.9.0.2")]
    );

    // Kept over a restart: nodes, services, the status their registrar gave.
    let data_dir = server.stop_keeping_data().await;
    let server = TestServer::start_with(sextant::Config {
        data_dir,
        ..common::test_config()
    })
    .await;
    assert_eq!(
        node_names(&server.get_json("/v1/catalog/nodes").await),
        ["testnode", "google"]
    );
    assert_eq!(dns_a(&server, search).await, [common::ip("10.0.0.9")]);
    assert_eq!(
        dns_a(&server, "maps.service.trading-dc.").await,
        [common::ip("10.9.0.2")]
    );
    assert_eq!(
        dns_a(&server, "google.node.trading-dc.").await,
        [common::ip("10.9.0.1")]
    );

    // Deregistration: a check, a service, then the whole node.
    let deregister = async |body: Value| {
        let (status, text) = server.put_json("/v1/catalog/deregister", &body).await;
        assert_eq!((status.as_u16(), text.as_str()), (200, "true"), "{body}");
    };
    deregister(json!({"Node": "google", "CheckID": "search-g-https"})).await;
    assert_eq!(
        dns_a(&server, search).await,
        [common::ip("10.0.0.9"), common::ip("10.9.0.1")]
    );
    deregister(json!({"Node": "google", "ServiceID": "search-g"})).await;
    assert_eq!(dns_a(&server, search).await, [common::ip("10.0.0.9")]);
    assert!(
        server.get_json("/v1/catalog/node/google").await["Services"]
            .get("search-g")
            .is_none()
    );
    deregister(json!({"Node": "google"})).await;
    assert_eq!(node_names(&server.get_json("/v1/catalog/nodes").await), ["testnode"]);
    let maps = udp(server.dns, "maps.service.trading-dc.", RecordType::A).await;
    assert_eq!(rcode(&maps), ResponseCode::NXDomain);
    let gone = udp(server.dns, "google.node.trading-dc.", RecordType::A).await;
    assert_eq!(rcode(&gone), ResponseCode::NXDomain);
    // Nothing to take off is no error, as in Consul.
    deregister(json!({"Node": "google"})).await;
    server.stop().await;
}

/// A catalog check with a `Definition` sextant runs (consul-esm's form): probed like an agent's.
#[tokio::test]
async fn a_catalog_check_with_a_definition_is_probed() {
    let server = TestServer::start().await;
    let endpoint = HttpEndpoint::start(200).await;
    // Go clients send every field of the definition, the unset ones empty.
    catalog_register(
        &server,
        json!({
            "Node": "legacy", "Address": "10.7.0.1",
            "Service": {"ID": "billing-1", "Service": "billing", "Port": 8080},
            "Check": {
                "Node": "legacy", "CheckID": "billing-1-http", "Name": "billing http", "ServiceID": "billing-1",
                "Status": "critical", "Type": "http",
                "Definition": {"HTTP": endpoint.url("/health"), "Interval": "1s", "Timeout": "500ms", "TCP": "",
                               "UDP": "", "GRPC": "", "OSService": "", "TLSSkipVerify": false, "Header": null,
                               "Method": "", "Body": "", "IntervalDuration": 0, "DeregisterCriticalServiceAfter": "0s"}
            }
        }),
    )
    .await;
    let billing = "billing.service.trading-dc.";
    wait_for("the probe to pass", async || {
        dns_a(&server, billing).await == [common::ip("10.7.0.1")]
    })
    .await;
    let checks = server.get_json("/v1/health/node/legacy").await;
    assert_eq!(checks[0]["Type"], "http", "{checks}");
    assert_eq!(checks[0]["Definition"]["HTTP"], endpoint.url("/health"));
    endpoint.set_status(500);
    wait_for("the probe to fail", async || dns_a(&server, billing).await.is_empty()).await;
    endpoint.set_status(200);
    wait_for("the probe to pass again", async || {
        !dns_a(&server, billing).await.is_empty()
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn bad_catalog_registrations_are_refused_whole() {
    let server = TestServer::start().await;
    catalog_register(
        &server,
        json!({"Node": "db", "Address": "10.8.0.1", "Service": {"ID": "pg-1", "Service": "pg", "Port": 5432},
               "Check": {"CheckID": "pg-1-sql", "ServiceID": "pg-1", "Status": "passing"}}),
    )
    .await;
    server.register(json!({"Name": "web", "ID": "web-1", "Port": 80})).await;
    let before = (
        server.get_json("/v1/catalog/nodes").await,
        server.get_json("/v1/health/node/db").await,
        server.get_json("/v1/catalog/services").await,
    );
    let cases: Vec<(Value, &str)> = vec![
        (json!({"Address": "10.8.0.2"}), "Node: missing node name"),
        (json!({"Node": "db2"}), "Address: missing node address"),
        (json!({"Node": "db_2", "Address": "10.8.0.2"}), "Node: "),
        (json!({"Node": "db", "Address": "10.8.0.300"}), "Address: "),
        (
            json!({"Node": "db", "Address": "10.8.0.1", "NodeMeta": {"consul-x": "1"}}),
            "NodeMeta",
        ),
        (
            json!({"Node": "testnode", "Address": "10.8.0.1"}),
            "this server's own node",
        ),
        (
            json!({"Node": "db", "Address": "10.8.0.1", "Service": {"ID": "web-1", "Service": "web", "Port": 1}}),
            "registered on node \"testnode\"",
        ),
        (
            json!({"Node": "db", "Address": "10.8.0.1", "Service": {"Service": "pg", "Port": 70000}}),
            "Service.Port",
        ),
        (
            json!({"Node": "db", "Address": "10.8.0.1", "Service": {"Name": "pg"}}),
            "Service: unknown field `Name`",
        ),
        (
            json!({"Node": "db", "Address": "10.8.0.1", "Check": {"CheckID": "x", "ServiceID": "nope", "Status": "passing"}}),
            "no service with ID \"nope\"",
        ),
        (
            json!({"Node": "db", "Address": "10.8.0.1", "Check": {"CheckID": "x", "Status": "fine"}}),
            "Check.Status",
        ),
        (
            json!({"Node": "db", "Address": "10.8.0.1", "Check": {"CheckID": "x", "Definition": {"TCP": "10.8.0.1:5432", "Interval": "5s"}}}),
            "node-level check",
        ),
        (
            json!({"Node": "db", "Address": "10.8.0.1", "Checks": [{"Status": "passing"}]}),
            "Checks[0].CheckID",
        ),
        (
            // One check ID for two checks of one node: its own and a service's, or two services'.
            json!({"Node": "db", "Address": "10.8.0.1", "Service": {"ID": "pg-3", "Service": "pg", "Port": 5434},
                   "Checks": [{"CheckID": "c", "ServiceID": "pg-1", "Status": "passing"},
                              {"CheckID": "c", "ServiceID": "pg-3", "Status": "passing"}]}),
            "\"c\" is used twice on node \"db\"",
        ),
        (
            json!({"Node": "db", "Address": "10.8.0.1",
                   "Checks": [{"CheckID": "c", "Status": "passing"}, {"CheckID": "c", "ServiceID": "pg-1", "Status": "passing"}]}),
            "used twice",
        ),
        (
            // A node-level check named as a check of a service already on the node.
            json!({"Node": "db", "Address": "10.8.0.1", "Check": {"CheckID": "pg-1-sql", "Status": "passing"}}),
            "\"pg-1-sql\" is used twice on node \"db\"",
        ),
        (
            json!({"Node": "db", "Address": "10.8.0.1", "Check": {"Node": "other", "CheckID": "x"}}),
            "Check.Node",
        ),
        (
            // The node update and the service are fine; the check is not: nothing is written.
            json!({"Node": "db", "Address": "10.8.0.9", "Service": {"ID": "pg-2", "Service": "pg", "Port": 5433},
                   "Check": {"CheckID": "pg-2-ok", "ServiceID": "pg-2", "Status": "passing", "Definition": {"Script": "x"}}}),
            "Check.Definition",
        ),
    ];
    for (body, expected) in cases {
        let (status, text) = server.put_json("/v1/catalog/register", &body).await;
        assert_eq!(status, 400, "{body} → {text}");
        assert!(text.contains(expected), "{body}: {text:?} should say {expected:?}");
    }
    let (status, text) = server
        .put_json("/v1/catalog/deregister", &json!({"ServiceID": "pg-1"}))
        .await;
    assert_eq!(status, 400, "{text}");
    let (status, text) = server
        .put_json("/v1/catalog/deregister", &json!({"Node": "testnode"}))
        .await;
    assert!(status == 400 && text.contains("own node"), "{text}");
    let after = (
        server.get_json("/v1/catalog/nodes").await,
        server.get_json("/v1/health/node/db").await,
        server.get_json("/v1/catalog/services").await,
    );
    assert_eq!(before, after, "a refused request changes nothing");
    server.stop().await;
}

/// `PUT /v1/agent/maintenance`: Consul's `_node_maintenance` check takes every service of this
/// server's node out of DNS (not external nodes'), and survives a restart.
#[tokio::test]
async fn node_maintenance_takes_this_nodes_services_out_and_survives_a_restart() {
    let server = TestServer::start().await;
    server
        .register(json!({"Name": "web", "ID": "web-1", "Address": "10.0.0.1", "Port": 80}))
        .await;
    server
        .register(json!({"Name": "api", "ID": "api-1", "Address": "10.0.0.2", "Port": 81}))
        .await;
    catalog_register(
        &server,
        json!({"Node": "ext", "Address": "10.9.9.9", "Service": {"ID": "web-ext", "Service": "web", "Port": 80}}),
    )
    .await;
    let web = "web.service.trading-dc.";
    assert_eq!(
        dns_a(&server, web).await,
        [common::ip("10.0.0.1"), common::ip("10.9.9.9")]
    );
    let (status, body) = server
        .put("/v1/agent/maintenance?enable=true&reason=kernel+upgrade")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        dns_a(&server, web).await,
        [common::ip("10.9.9.9")],
        "the external node stays"
    );
    assert!(dns_a(&server, "api.service.trading-dc.").await.is_empty());
    let checks = server.get_json("/v1/agent/checks").await;
    let check = &checks["_node_maintenance"];
    assert_eq!(
        (&check["Status"], &check["Notes"], &check["ServiceID"], &check["Type"]),
        (
            &json!("critical"),
            &json!("kernel upgrade"),
            &json!(""),
            &json!("maintenance")
        ),
        "{checks}"
    );
    let (status, _, text) = server.get("/v1/agent/health/service/id/web-1?format=text").await;
    assert_eq!((status.as_u16(), text.as_str()), (503, "critical"));
    // A service registering itself again stays out: the node is in maintenance.
    server
        .register(json!({"Name": "web", "ID": "web-1", "Address": "10.0.0.1", "Port": 80}))
        .await;
    assert_eq!(dns_a(&server, web).await, [common::ip("10.9.9.9")]);

    let data_dir = server.stop_keeping_data().await;
    let server = TestServer::start_with(sextant::Config {
        data_dir,
        ..common::test_config()
    })
    .await;
    assert_eq!(
        dns_a(&server, web).await,
        [common::ip("10.9.9.9")],
        "still out after a restart"
    );
    let (status, _) = server.put("/v1/agent/maintenance?enable=false").await;
    assert_eq!(status, 200);
    assert_eq!(
        dns_a(&server, web).await,
        [common::ip("10.0.0.1"), common::ip("10.9.9.9")]
    );
    assert_eq!(
        dns_a(&server, "api.service.trading-dc.").await,
        [common::ip("10.0.0.2")]
    );
    assert!(
        server
            .get_json("/v1/agent/checks")
            .await
            .get("_node_maintenance")
            .is_none()
    );
    // Consul's errors for `enable`.
    let (status, body) = server.put("/v1/agent/maintenance").await;
    assert_eq!((status.as_u16(), body.as_str()), (400, "Missing value for enable"));
    let (status, _) = server.put("/v1/agent/maintenance?enable=maybe").await;
    assert_eq!(status, 400);
    server.stop().await;
}

/// What Go's `api.CatalogRegistration` sends (Terraform, consul-esm): every field, the unset
/// ones zero, null or empty, a `Definition` with nothing to run and `Weights` of zero.
#[tokio::test]
async fn go_clients_bodies_skip_node_update_and_node_meta_filters() {
    let server = TestServer::start().await;
    let go_body = |status: &str| {
        json!({
            "ID": "", "Node": "esm-node", "Address": "10.5.0.1", "TaggedAddresses": null,
            "NodeMeta": {"external-node": "true", "external-probe": "true"}, "Datacenter": "",
            "Service": {"Kind": "", "ID": "web-ext", "Service": "web-ext", "Tags": null, "Meta": null, "Port": 80,
                        "Address": "", "SocketPath": "", "TaggedAddresses": null, "Weights": {"Passing": 0, "Warning": 0},
                        "EnableTagOverride": false, "CreateIndex": 0, "ModifyIndex": 0, "ContentHash": "",
                        "Proxy": null, "Connect": null, "PeerName": "", "Namespace": "", "Partition": "",
                        "Datacenter": "", "Locality": null},
            "Check": {"Node": "esm-node", "CheckID": "web-ext-tcp", "Name": "web tcp", "Status": status, "Notes": "",
                      "Output": "", "ServiceID": "web-ext", "ServiceName": "web-ext", "ServiceTags": null, "Type": "",
                      "Interval": "", "Timeout": "", "ExposedPort": 0,
                      "Definition": {"Interval": "0s", "Timeout": "0s", "DeregisterCriticalServiceAfter": "0s",
                                     "HTTP": "", "Header": null, "Method": "", "Body": "", "TLSServerName": "",
                                     "TLSSkipVerify": false, "TCP": "", "TCPUseTLS": false, "UDP": "", "GRPC": "",
                                     "OSService": "", "GRPCUseTLS": false},
                      "CreateIndex": 0, "ModifyIndex": 0, "Namespace": "", "Partition": ""},
            "Checks": null, "SkipNodeUpdate": false, "Partition": "", "Locality": null
        })
    };
    catalog_register(&server, go_body("passing")).await;
    let web = "web-ext.service.trading-dc.";
    assert_eq!(dns_a(&server, web).await, [common::ip("10.5.0.1")]);
    let entry = &server.get_json("/v1/health/service/web-ext").await[0];
    assert_eq!(entry["Service"]["Weights"], json!({"Passing": 1, "Warning": 1}));
    assert_eq!(entry["Checks"][0]["Type"], "", "not run by sextant: {entry}");
    catalog_register(&server, go_body("critical")).await;
    assert!(dns_a(&server, web).await.is_empty());

    // SkipNodeUpdate: a check's update without the node's address keeps the node as it is.
    catalog_register(
        &server,
        json!({"Node": "esm-node", "SkipNodeUpdate": true,
               "Check": {"CheckID": "web-ext-tcp", "ServiceID": "web-ext", "Status": "passing"}}),
    )
    .await;
    assert_eq!(dns_a(&server, web).await, [common::ip("10.5.0.1")]);
    let node = server.get_json("/v1/catalog/node/esm-node").await;
    assert_eq!(node["Node"]["Meta"]["external-probe"], "true", "{node}");
    assert_eq!(node["Node"]["Address"], "10.5.0.1");
    // An unknown node still needs its address.
    let (status, text) = server
        .put_json(
            "/v1/catalog/register",
            &json!({"Node": "nowhere", "SkipNodeUpdate": true}),
        )
        .await;
    assert!(status == 400 && text.contains("Address"), "{text}");

    // `?node-meta=`: how consul-esm finds its nodes.
    server
        .register(json!({"Name": "web-ext-local", "ID": "local-1", "Port": 81}))
        .await;
    let nodes = server.get_json("/v1/catalog/nodes?node-meta=external-node:true").await;
    assert_eq!(node_names(&nodes), ["esm-node"]);
    let services = server
        .get_json("/v1/catalog/services?node-meta=external-node:true")
        .await;
    assert_eq!(services, json!({"web-ext": []}));
    let checks = server
        .get_json("/v1/health/state/any?node-meta=external-node:true")
        .await;
    assert_eq!(checks.as_array().unwrap().len(), 1, "{checks}");

    // The agent API is this server's node's: it neither takes over nor edits an external service.
    let (status, text) = server
        .put_json(
            "/v1/agent/service/register",
            &json!({"Name": "web-ext", "ID": "web-ext", "Port": 1}),
        )
        .await;
    assert!(status == 400 && text.contains("esm-node"), "{text}");
    let (status, _) = server.put("/v1/agent/check/deregister/web-ext-tcp").await;
    assert_eq!(status, 404);
    assert_eq!(
        server
            .get_json("/v1/health/node/esm-node")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    server.stop().await;
}

/// `PUT /v1/agent/check/register` without a `ServiceID`: a check of this server's node, run
/// like a service's (TTL, HTTP…); while it is critical every service registered here is, as in
/// Consul; kept over a restart; taken off with `/v1/agent/check/deregister/<id>`.
#[tokio::test]
async fn node_level_agent_checks_hold_every_service_of_this_node() {
    let server = TestServer::start().await;
    server
        .register(json!({"Name": "web", "ID": "web-1", "Address": "10.0.0.1", "Port": 80}))
        .await;
    server
        .register(json!({"Name": "api", "ID": "api-1", "Address": "10.0.0.2", "Port": 81,
                         "Check": {"CheckID": "api-1-ttl", "TTL": "1h", "Status": "passing"}}))
        .await;
    let web = "web.service.trading-dc.";
    let answered =
        async |server: &TestServer| (dns_a(server, web).await, dns_a(server, "api.service.trading-dc.").await);
    let both = (vec![common::ip("10.0.0.1")], vec![common::ip("10.0.0.2")]);
    assert_eq!(answered(&server).await, both);

    // A TTL check on the node, critical until its first heartbeat (Consul's default).
    let (status, body) = server
        .put_json(
            "/v1/agent/check/register",
            &json!({"Name": "disk", "CheckID": "node-disk", "TTL": "1h", "Notes": "root fs"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        answered(&server).await,
        (vec![], vec![]),
        "every service of the node is out"
    );
    let checks = server.get_json("/v1/agent/checks").await;
    assert_eq!(
        (&checks["node-disk"]["ServiceID"], &checks["node-disk"]["Status"]),
        (&json!(""), &json!("critical")),
        "{checks}"
    );
    let (status, _) = server.put("/v1/agent/check/pass/node-disk?note=ok").await;
    assert_eq!(status, 200);
    assert_eq!(answered(&server).await, both);
    let entry = &server.get_json("/v1/health/service/web").await[0];
    let ids: Vec<&str> = entry["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["CheckID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["serfHealth", "node-disk"], "the node's checks in every entry");

    // An HTTP check on the node, probed: its failure takes every service out, and back.
    let endpoint = HttpEndpoint::start(200).await;
    let (status, body) = server
        .put_json(
            "/v1/agent/check/register",
            &json!({"Name": "uplink", "HTTP": endpoint.url("/up"), "Interval": "1s", "Status": "passing"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    endpoint.set_status(500);
    wait_for("the node's HTTP check to fail", async || {
        answered(&server).await == (vec![], vec![])
    })
    .await;
    endpoint.set_status(200);
    wait_for("the node's HTTP check to pass", async || {
        answered(&server).await == both
    })
    .await;

    // IDs stay apart: a node check cannot take a service's check ID, nor the reverse.
    let (status, text) = server
        .put_json(
            "/v1/agent/check/register",
            &json!({"Name": "x", "CheckID": "api-1-ttl", "TTL": "1h"}),
        )
        .await;
    assert!(status == 400 && text.contains("api-1"), "{text}");
    let (status, text) = server
        .put_json(
            "/v1/agent/service/register",
            &json!({"Name": "db", "Check": {"CheckID": "node-disk", "TTL": "1h"}}),
        )
        .await;
    assert!(status == 400 && text.contains("this server's node"), "{text}");

    // Kept over a restart (statuses as last known), and taken off.
    let (status, _) = server.put("/v1/agent/check/fail/node-disk?note=full").await;
    assert_eq!(status, 200);
    assert_eq!(answered(&server).await, (vec![], vec![]));
    let data_dir = server.stop_keeping_data().await;
    let server = TestServer::start_with(sextant::Config {
        data_dir,
        ..common::test_config()
    })
    .await;
    assert_eq!(answered(&server).await, (vec![], vec![]), "still out after a restart");
    let checks = server.get_json("/v1/agent/checks").await;
    assert_eq!(checks["node-disk"]["Output"], "full", "{checks}");
    let (status, _) = server.put("/v1/agent/check/deregister/node-disk").await;
    assert_eq!(status, 200);
    wait_for("the services back", async || answered(&server).await == both).await;
    assert!(server.get_json("/v1/agent/checks").await.get("node-disk").is_none());
    server.stop().await;
}
