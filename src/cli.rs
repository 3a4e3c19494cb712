//! The command-line client: `sextant services`, `instances`, `register`, `deregister`, `check`,
//! `watch` against a running server, built on [`crate::client`]. Tables for people, `--json` for
//! scripts, and exit codes a script can branch on ([`exit_code`]).

use std::io::Read;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::client::{Client, Error, Instances, Status};

/// The commands that talk to a running server.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// List the services, with their instances counted by health.
    Services(Common),
    /// List a service's instances with their health and checks.
    Instances {
        /// The service's name.
        name: String,
        #[command(flatten)]
        common: Common,
    },
    /// Register an instance from a file of Consul's registration JSON (`-` reads standard input).
    Register {
        /// The file, or `-`.
        file: String,
        #[command(flatten)]
        common: Common,
    },
    /// Deregister an instance by its ID.
    Deregister {
        /// The instance's ID.
        id: String,
        #[command(flatten)]
        common: Common,
    },
    /// Set a TTL check passing, warning or critical.
    Check {
        #[arg(value_enum)]
        status: CheckUpdate,
        /// The check's ID (`service:<instance-id>` for an instance's single check).
        check_id: String,
        /// The check's output.
        #[arg(long, default_value = "")]
        note: String,
        #[command(flatten)]
        common: Common,
    },
    /// Print each change to a service's healthy instances as it happens (blocking queries);
    /// runs until interrupted.
    Watch {
        /// The service's name.
        name: String,
        #[command(flatten)]
        common: Common,
    },
}

/// Where the server is, the token, and the output format: taken by every client command.
#[derive(Debug, Args)]
pub struct Common {
    /// sextant's HTTP API, `host:port` or a URL.
    #[arg(long, env = "SEXTANT_HTTP_ADDR", default_value = "127.0.0.1:8500")]
    http: String,
    /// The ACL token (else `SEXTANT_HTTP_TOKEN`, else `CONSUL_HTTP_TOKEN`).
    #[arg(long, env = "SEXTANT_HTTP_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A CA certificate (PEM) to trust for an https:// server (else `CONSUL_CACERT`; an address
    /// without a scheme is https:// when `CONSUL_HTTP_SSL` is true).
    #[arg(long, value_name = "PEM")]
    ca_cert: Option<std::path::PathBuf>,
    /// A client certificate (PEM) for a server that asks for one, with --client-key (else
    /// `CONSUL_CLIENT_CERT` and `CONSUL_CLIENT_KEY`).
    #[arg(long, value_name = "PEM", requires = "client_key")]
    client_cert: Option<std::path::PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, value_name = "PEM", requires = "client_cert")]
    client_key: Option<std::path::PathBuf>,
    /// JSON output instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CheckUpdate {
    Pass,
    Warn,
    Fail,
}

/// Exit codes: 0 done, 1 not found, 2 usage (clap's own, and input the server refused), 3 the
/// server unreachable or failing.
pub fn exit_code(error: &Error) -> i32 {
    match error {
        Error::NotFound { .. } | Error::ServiceUnknown { .. } | Error::NoHealthyInstance { .. } => 1,
        Error::Refused { .. } | Error::Forbidden { .. } | Error::Invalid { .. } => 2,
        _ => 3,
    }
}

/// Runs one command; what it prints goes to standard output, errors to the caller.
pub async fn run(command: ClientCommand) -> Result<(), Error> {
    match command {
        ClientCommand::Services(common) => services(&client(&common)?, common.json).await,
        ClientCommand::Instances { name, common } => instances(&client(&common)?, &name, common.json).await,
        ClientCommand::Register { file, common } => register(&client(&common)?, &file, common.json).await,
        ClientCommand::Deregister { id, common } => {
            client(&common)?.deregister(&id).await?;
            say(common.json, json!({"Deregistered": id}), format!("deregistered {id}"));
            Ok(())
        }
        ClientCommand::Check {
            status,
            check_id,
            note,
            common,
        } => {
            let client = client(&common)?;
            let status = match status {
                CheckUpdate::Pass => client.pass_check(&check_id, &note).await.map(|()| Status::Passing),
                CheckUpdate::Warn => client.warn_check(&check_id, &note).await.map(|()| Status::Warning),
                CheckUpdate::Fail => client.fail_check(&check_id, &note).await.map(|()| Status::Critical),
            }?;
            say(
                common.json,
                json!({"CheckID": check_id, "Status": status.as_str()}),
                format!("{check_id}: {status}"),
            );
            Ok(())
        }
        ClientCommand::Watch { name, common } => watch(&client(&common)?, &name, common.json).await,
    }
}

fn client(common: &Common) -> Result<Client, Error> {
    let mut builder = Client::builder(&common.http);
    if let Some(token) = &common.token {
        builder = builder.token(token);
    }
    if let Some(ca) = &common.ca_cert {
        builder = builder.ca_cert(ca);
    }
    if let (Some(cert), Some(key)) = (&common.client_cert, &common.client_key) {
        builder = builder.client_cert(cert, key);
    }
    builder.build()
}

fn say(json: bool, as_json: Value, as_text: String) {
    println!("{}", if json { as_json.to_string() } else { as_text });
}

async fn services(client: &Client, json: bool) -> Result<(), Error> {
    let services = client.services().await?;
    if json {
        let list: Vec<Value> = services
            .iter()
            .map(|s| {
                json!({"Name": s.name, "Instances": s.instances(), "Passing": s.passing,
                       "Warning": s.warning, "Critical": s.critical, "Tags": s.tags})
            })
            .collect();
        println!("{}", Value::from(list));
        return Ok(());
    }
    let mut table = vec![row(["SERVICE", "INSTANCES", "PASSING", "WARNING", "CRITICAL", "TAGS"])];
    for s in &services {
        let counts = [s.instances(), s.passing, s.warning, s.critical].map(|n| n.to_string());
        table.push([vec![s.name.clone()], counts.to_vec(), vec![s.tags.join(",")]].concat());
    }
    print_table(&table);
    Ok(())
}

async fn instances(client: &Client, name: &str, json: bool) -> Result<(), Error> {
    let instances = client.health(name).await?;
    if instances.is_empty() {
        return Err(Error::ServiceUnknown {
            service: name.to_string(),
        });
    }
    if json {
        let list: Vec<Value> = instances
            .iter()
            .map(|h| {
                let i = &h.instance;
                let checks: Vec<Value> = h
                    .checks
                    .iter()
                    .map(|c| json!({"CheckID": c.id, "Name": c.name, "Status": c.status.as_str(), "Output": c.output}))
                    .collect();
                json!({"ID": i.id, "Service": i.service, "Address": i.address, "Port": i.port,
                       "Status": h.status.as_str(), "Tags": i.tags, "Meta": i.meta, "Checks": checks})
            })
            .collect();
        println!("{}", Value::from(list));
        return Ok(());
    }
    let mut table = vec![row(["ID", "ADDRESS", "STATUS", "TAGS", "CHECKS"])];
    for h in &instances {
        let checks: Vec<String> = h.checks.iter().map(|c| format!("{}={}", c.id, c.status)).collect();
        table.push(vec![
            h.instance.id.clone(),
            h.instance.socket_addr(),
            h.status.to_string(),
            h.instance.tags.join(","),
            checks.join(" "),
        ]);
    }
    print_table(&table);
    Ok(())
}

async fn register(client: &Client, file: &str, json: bool) -> Result<(), Error> {
    let invalid = |reason: String| Error::Invalid {
        what: "registration file",
        reason,
    };
    let text = if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| invalid(format!("standard input: {e}")))?;
        text
    } else {
        std::fs::read_to_string(file).map_err(|e| invalid(format!("{file}: {e}")))?
    };
    let body: Value = serde_json::from_str(&text).map_err(|e| invalid(format!("{file}: not JSON: {e}")))?;
    client.register_json(&body).await?;
    let id = body
        .get("ID")
        .or_else(|| body.get("Name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    say(json, json!({"Registered": id}), format!("registered {id}"));
    Ok(())
}

/// Prints the healthy instances at start, then one line for each change: what joined and left.
async fn watch(client: &Client, name: &str, json: bool) -> Result<(), Error> {
    let mut view = client.watch(name);
    let mut shown = view.ready().await?;
    print_change(&shown, None, json);
    let mut failing = false;
    loop {
        let now = view.changed().await?;
        if let Some(error) = now.failing() {
            // One line per failed read: the view backs off between them.
            eprintln!("{}  {error} (retrying)", timestamp());
            failing = true;
            continue;
        }
        if std::mem::take(&mut failing) {
            eprintln!("{}  reading {name} again", timestamp());
        }
        if now.generation() != shown.generation() {
            print_change(&now, Some(&shown), json);
            shown = now;
        }
    }
}

fn print_change(now: &Instances, before: Option<&Instances>, json: bool) {
    let ids = |list: &Instances| list.instances().iter().map(|i| i.id.clone()).collect::<Vec<_>>();
    let (current, previous) = (ids(now), before.map(ids).unwrap_or_default());
    let joined: Vec<&String> = current.iter().filter(|id| !previous.contains(id)).collect();
    let left: Vec<&String> = previous.iter().filter(|id| !current.contains(id)).collect();
    if json {
        let healthy: Vec<Value> = now
            .instances()
            .iter()
            .map(|i| json!({"ID": i.id, "Address": i.address, "Port": i.port}))
            .collect();
        let line =
            json!({"Time": timestamp(), "Index": now.index(), "Healthy": healthy, "Joined": joined, "Left": left});
        println!("{line}");
        return;
    }
    let mut change: Vec<String> = joined.iter().map(|id| format!("+{id}")).collect();
    change.extend(left.iter().map(|id| format!("-{id}")));
    let listed: Vec<String> = now
        .instances()
        .iter()
        .map(|i| format!("{} ({})", i.id, i.socket_addr()))
        .collect();
    println!(
        "{}  {} healthy  {}  [{}]",
        timestamp(),
        now.instances().len(),
        if change.is_empty() {
            "=".to_string()
        } else {
            change.join(" ")
        },
        listed.join(", ")
    );
}

fn timestamp() -> String {
    let format = time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::now_utc().format(&format).unwrap_or_default()
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Columns padded to their widest cell and two spaces apart, no borders: what `kubectl get`
/// prints, readable and still easy to cut with `awk`. Too small a job for a table crate.
fn print_table(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, &width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}
