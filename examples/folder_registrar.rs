//! A third-party registrar: keeps sextant in step with a folder of JSON service files, as
//! Registrator does for containers.
//!
//! Each `*.json` file in the folder is one instance, in Consul's registration JSON (as
//! `examples/register.json`). A file added or changed is registered; a file removed is
//! deregistered. The registrar marks what it registers with the meta key `external-source`
//! (`folder:<dir>`), so it only ever deregisters its own instances, and cleans up after files
//! removed while it was not running.
//!
//! ```text
//! cargo run --example folder_registrar -- --dir services/
//! ```
//!
//! Every pass (each `--interval-ms`) compares the folder with what sextant holds, rather than
//! reacting to file events: the same pass repairs a sextant that restarted with an empty registry.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde_json::{Value, json};
use sextant::client::{Client, Error};

#[derive(Parser)]
struct Args {
    /// The folder of service files.
    #[arg(long)]
    dir: PathBuf,
    /// sextant's HTTP API.
    #[arg(long, env = "SEXTANT_HTTP_ADDR", default_value = "127.0.0.1:8500")]
    sextant: String,
    /// How often the folder is compared with sextant, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
}

/// What the registrar has done, so that it repeats nothing and logs each problem once.
#[derive(Default)]
struct Registrar {
    /// The body last registered, by instance ID.
    registered: HashMap<String, Value>,
    /// Bodies sextant refused, by instance ID: not sent again until the file changes.
    refused: HashMap<String, Value>,
    /// The last problem reported, by file (until the file changes).
    reported: HashMap<PathBuf, String>,
    /// The last readable content of each file: a file caught half-written (an editor saving, a
    /// copy in progress) keeps its instance rather than deregistering it for a moment.
    last_good: HashMap<PathBuf, (String, Value)>,
}

#[tokio::main]
async fn main() {
    if let Err(error) = run().await {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let args = Args::parse();
    let dir = args
        .dir
        .canonicalize()
        .map_err(|e| format!("cannot read {}: {e}", args.dir.display()))?;
    let source = format!("folder:{}", dir.display());
    let client = Client::new(&args.sextant)?;
    let mut registrar = Registrar::default();
    println!("keeping sextant at {} in step with {}", client.address(), dir.display());
    loop {
        if let Err(error) = registrar.pass(&client, &dir, &source).await {
            eprintln!("this pass failed, trying again: {error}");
        }
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }
}

impl Registrar {
    /// One comparison of the folder with sextant, and the registrations it calls for.
    async fn pass(&mut self, client: &Client, dir: &Path, source: &str) -> Result<(), Error> {
        let wanted = self.read_folder(dir, source);
        let held: BTreeMap<String, _> = client
            .registered()
            .await?
            .into_iter()
            .filter(|instance| instance.meta.get("external-source").map(String::as_str) == Some(source))
            .map(|instance| (instance.id.clone(), instance))
            .collect();
        for (id, (file, body)) in &wanted {
            let done = held.contains_key(id) && self.registered.get(id) == Some(body);
            if done || self.refused.get(id) == Some(body) {
                continue;
            }
            match client.register_json(body).await {
                Ok(()) => {
                    println!("registered {id} from {}", file.display());
                    self.registered.insert(id.clone(), body.clone());
                    self.refused.remove(id);
                    self.reported.remove(file);
                }
                Err(Error::Refused { message, .. }) => {
                    self.refused.insert(id.clone(), body.clone());
                    self.report(file, format!("sextant refused it: {message}"));
                }
                Err(error) => return Err(error),
            }
        }
        for id in held.keys().filter(|id| !wanted.contains_key(*id)) {
            match client.deregister(id).await {
                Ok(()) | Err(Error::NotFound { .. }) => println!("deregistered {id} (its file is gone)"),
                Err(error) => return Err(error),
            }
            self.registered.remove(id);
        }
        Ok(())
    }

    /// The instances the folder describes, by ID, each body marked as this registrar's.
    fn read_folder(&mut self, dir: &Path, source: &str) -> BTreeMap<String, (PathBuf, Value)> {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(error) => {
                eprintln!("cannot read {}: {error}", dir.display());
                return BTreeMap::new();
            }
        };
        files.retain(|path| path.extension().is_some_and(|e| e == "json"));
        files.sort();
        self.last_good.retain(|file, _| files.contains(file));
        let mut wanted = BTreeMap::new();
        for file in files {
            let read = read_service_file(&file, source);
            match &read {
                Ok(good) => {
                    self.last_good.insert(file.clone(), good.clone());
                }
                Err(problem) => self.report(&file, problem.clone()),
            }
            let Some((id, body)) = read.ok().or_else(|| self.last_good.get(&file).cloned()) else {
                continue;
            };
            if let Some((first, _)) = wanted.get(&id) {
                let first: &PathBuf = first;
                self.report(
                    &file,
                    format!("instance {id} is already described by {}", first.display()),
                );
                continue;
            }
            wanted.insert(id, (file, body));
        }
        wanted
    }

    fn report(&mut self, file: &Path, problem: String) {
        if self.reported.get(file) != Some(&problem) {
            println!("skipping {}: {problem}", file.display());
            self.reported.insert(file.to_path_buf(), problem);
        }
    }
}

/// One service file: its instance ID (`ID`, else `Name`, as Consul) and its body with the
/// registrar's mark in `Meta`.
fn read_service_file(file: &Path, source: &str) -> Result<(String, Value), String> {
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    let mut body: Value = serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
    let object = body.as_object_mut().ok_or("not a JSON object")?;
    let id = match (object.get("ID"), object.get("Name")) {
        (Some(Value::String(id)), _) | (None, Some(Value::String(id))) if !id.is_empty() => id.clone(),
        _ => return Err("no Name (or ID) string".into()),
    };
    let meta = object.entry("Meta").or_insert_with(|| json!({}));
    let meta = meta.as_object_mut().ok_or("Meta is not an object")?;
    meta.insert("external-source".into(), json!(source));
    Ok((id, body))
}
