//! The command-line client (`sextant services|instances|register|deregister|check|watch`): the
//! real binary against a real server, its tables, its JSON, and its exit codes.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use sextant::Config;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::common::{TestServer, repo_zones, test_config};

/// `sextant <args>` against `server`; its exit code, standard output and standard error.
async fn sextant(server: &TestServer, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    sextant_with(server, args, stdin, &[]).await
}

async fn sextant_with(
    server: &TestServer,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sextant"))
        .args(args)
        .env("SEXTANT_HTTP_ADDR", &server.base)
        .env_remove("SEXTANT_HTTP_TOKEN")
        .env_remove("CONSUL_HTTP_TOKEN")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).await.unwrap();
    drop(input);
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("it exits")
        .unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (
        output.status.code().unwrap_or(-1),
        text(&output.stdout),
        text(&output.stderr),
    )
}

fn parse(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[tokio::test]
async fn register_list_check_and_deregister() {
    let server = TestServer::start().await;
    let file = repo_zones().parent().unwrap().join("examples/register.json");
    let (code, out, err) = sextant(&server, &["register", file.to_str().unwrap()], None).await;
    assert_eq!((code, out.as_str()), (0, "registered orders-1\n"), "{err}");
    let second = r#"{"ID": "orders-2", "Name": "orders", "Address": "10.0.0.2", "Port": 8080, "Check": {"TTL": "1m"}}"#;
    let (code, out, _) = sextant(&server, &["register", "-", "--json"], Some(second)).await;
    assert_eq!((code, parse(&out)), (0, json!({"Registered": "orders-2"})));

    let (code, out, _) = sextant(&server, &["services"], None).await;
    assert_eq!(code, 0);
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        lines,
        [
            vec!["SERVICE", "INSTANCES", "PASSING", "WARNING", "CRITICAL", "TAGS"],
            vec!["orders", "2", "1", "0", "1", "primary"]
        ]
    );
    let (_, out, _) = sextant(&server, &["services", "--json"], None).await;
    assert_eq!(
        parse(&out),
        json!([{"Name": "orders", "Instances": 2, "Passing": 1, "Warning": 0, "Critical": 1, "Tags": ["primary"]}])
    );

    let (code, out, err) = sextant(
        &server,
        &["check", "warn", "service:orders-2", "--note", "slow disk"],
        None,
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "service:orders-2: warning\n"), "{err}");
    let (code, out, _) = sextant(&server, &["instances", "orders", "--json"], None).await;
    assert_eq!(code, 0);
    let list = parse(&out);
    assert_eq!(list[1]["ID"], "orders-2");
    assert_eq!(list[1]["Status"], "warning");
    let check = list[1]["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["CheckID"] == "service:orders-2")
        .unwrap();
    assert_eq!(
        (&check["Status"], &check["Output"]),
        (&json!("warning"), &json!("slow disk"))
    );
    let (_, out, _) = sextant(&server, &["instances", "orders"], None).await;
    let rows: Vec<&str> = out.lines().collect();
    assert!(
        rows[0].starts_with("ID") && rows[2].starts_with("orders-2  10.0.0.2:8080  warning"),
        "{out}"
    );

    let (code, out, _) = sextant(&server, &["deregister", "orders-2"], None).await;
    assert_eq!((code, out.as_str()), (0, "deregistered orders-2\n"));
    let (_, out, _) = sextant(&server, &["instances", "orders", "--json"], None).await;
    assert_eq!(parse(&out).as_array().unwrap().len(), 1);
}

/// 0 done, 1 not found, 2 usage (and input the server refused), 3 server unreachable; the
/// message on standard error says which.
#[tokio::test]
async fn exit_codes_tell_scripts_what_happened() {
    let server = TestServer::start_with(Config {
        acl_token: Some("t0ken".into()),
        ..test_config()
    })
    .await;
    let cases: &[(&[&str], Option<&str>, i32, &str)] = &[
        (&["instances", "nosuch"], None, 1, "unknown"),
        (&["deregister", "nobody"], None, 1, "Unknown service ID"),
        (&["check", "pass", "service:nobody"], None, 1, "Unknown check ID"),
        (&["check", "maybe", "x"], None, 2, "invalid value 'maybe'"),
        (&["instances"], None, 2, "required"),
        (&["register", "/nonexistent.json"], None, 2, "/nonexistent.json"),
        (&["register", "-"], Some("{not json"), 2, "not JSON"),
        (
            &["register", "-"],
            Some(r#"{"Name": "x", "Port": "eighty"}"#),
            2,
            "Port",
        ),
        (&["services", "--token", "wrong"], None, 2, "403"),
        (&["services", "--http", "127.0.0.1:1"], None, 3, "Connection refused"),
    ];
    for (args, stdin, expected, says) in cases {
        let mut args = args.to_vec();
        if !args.contains(&"--token") {
            args.extend(["--token", "t0ken"]);
        }
        let (code, _, err) = sextant(&server, &args, *stdin).await;
        assert_eq!(code, *expected, "sextant {args:?}: {err}");
        assert!(err.contains(says), "sextant {args:?}: {err}");
    }
    // The token from the environment, as Consul's clients take it.
    let (code, out, err) = sextant_with(
        &server,
        &["services", "--json"],
        None,
        &[("SEXTANT_HTTP_TOKEN", "t0ken")],
    )
    .await;
    assert_eq!((code, parse(&out)), (0, json!([])), "{err}");
    let (code, _, err) = sextant_with(&server, &["services"], None, &[("CONSUL_HTTP_TOKEN", "t0ken")]).await;
    assert_eq!(code, 0, "{err}");
}

/// `sextant watch` prints the healthy instances, then a line for each change, as it happens.
#[tokio::test]
async fn watch_prints_each_change() {
    let server = TestServer::start().await;
    let mut watch = Command::new(env!("CARGO_BIN_EXE_sextant"))
        .args(["watch", "pay", "--json", "--http", &server.base])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut next = async || {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("a line")
            .unwrap()
            .unwrap();
        parse(&line)
    };
    let first = next().await;
    assert_eq!((&first["Healthy"], &first["Joined"]), (&json!([]), &json!([])));

    server.register(json!({"ID": "pay-1", "Name": "pay", "Address": "10.0.0.9", "Port": 443, "Check": {"TTL": "1m", "Status": "passing"}})).await;
    let joined = next().await;
    assert_eq!(joined["Joined"], json!(["pay-1"]));
    assert_eq!(
        joined["Healthy"],
        json!([{"ID": "pay-1", "Address": "10.0.0.9", "Port": 443}])
    );

    let (status, _) = server.put("/v1/agent/check/fail/service:pay-1").await;
    assert_eq!(status, 200);
    let left = next().await;
    assert_eq!((&left["Left"], &left["Healthy"]), (&json!(["pay-1"]), &json!([])));
}
