//! The registry kept in etcd (`--etcd`): one key per instance under the prefix
//! (`<prefix>instances/<id>`, the same JSON record as the embedded store's), written by every
//! server that shares the prefix. etcd is the log and each server's registry a view of it: a
//! write is one etcd transaction (several when a group commit holds more than etcd takes in
//! one), and every server, the writer included, applies the changes from one watch in revision
//! order ([`follow`]). The revision is the registry's index, the same on every server.
//!
//! Each server also keeps a key of its own, `<prefix>servers/<node>`, on a lease: while etcd
//! renews it, this server can reach a quorum.
//!
//! The journal calls the store from its own thread, so the store runs the async client on a
//! runtime of its own, with a bound on every call: etcd out of reach is a refused write (503),
//! never a hung one, and one member down is no refusal at all (a call goes on to the next).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, EventType, GetOptions, Identity, KeyValue, PutOptions, TlsOptions, Txn, TxnOp,
    WatchOptions,
};

use super::{Batch, Change, Follower, Store, StoreError, StoredInstance};

/// How long connecting to etcd may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one attempt of a call may take; a call is tried again for as long per member.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// The pause after an attempt that failed at once.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// The lease behind this server's key: how long after this server stops talking to etcd the
/// others see it gone.
const LEASE_TTL: i64 = 10;
/// How often the lease is renewed, which is also how soon this server learns that etcd (a
/// quorum of it) is out of reach, or back.
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How long a broken watch waits before it is opened again.
const REWATCH_PAUSE: Duration = Duration::from_millis(200);
/// etcd refuses a transaction of more than 128 operations (`--max-txn-ops`) or 1.5 MiB
/// (`--max-request-bytes`) by default: a larger batch goes in several.
const MAX_TXN_OPS: usize = 100;
const MAX_TXN_BYTES: usize = 1 << 20;
/// Instances read per request: 100,000 instances never come as one response.
const PAGE: i64 = 1000;

/// How to reach etcd, validated (`Config::settings`).
#[derive(Debug, Clone)]
pub struct EtcdSettings {
    /// `http://host:port` or `https://host:port`.
    pub endpoints: Vec<String>,
    /// Every key sextant writes starts with it.
    pub prefix: String,
    /// PEM files: the CA that signed the members' certificates, and this client's own.
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// etcd's user and password, when its authentication is on.
    pub user: Option<(String, String)>,
    /// This server's name, its key under `<prefix>servers/`.
    pub holder: String,
}

/// What the store's tasks share: the client and where its keys are.
#[derive(Clone)]
struct Keys {
    client: Client,
    prefix: String,
    /// The endpoints, for messages.
    endpoints: String,
    /// How many members there are: a call is tried for [`ATTEMPT_TIMEOUT`] per member.
    members: usize,
}

pub struct EtcdStore {
    /// Runs the client: the journal's thread blocks on it. Taken when dropped (see `Drop`).
    runtime: Option<tokio::runtime::Runtime>,
    keys: Keys,
    /// Who hears whether etcd can be reached, once the registry follows the store.
    follower: Arc<OnceLock<Weak<dyn Follower>>>,
}

impl EtcdStore {
    /// Connects, and keeps this server's key under the prefix alive.
    pub fn open(settings: &EtcdSettings) -> Result<Self, StoreError> {
        let endpoints = settings.endpoints.join(",");
        let unreachable = |message: String| StoreError::Etcd {
            endpoints: endpoints.clone(),
            message,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("etcd")
            .enable_all()
            .build()
            .map_err(|e| unreachable(e.to_string()))?;
        let client = runtime.block_on(connect(settings)).map_err(unreachable)?;
        let keys = Keys {
            client,
            prefix: settings.prefix.clone(),
            endpoints: endpoints.clone(),
            members: settings.endpoints.len().max(1),
        };
        let store = Self {
            runtime: Some(runtime),
            keys,
            follower: Arc::new(OnceLock::new()),
        };
        let members = store.retried(|mut client| async move { client.member_list().await })?;
        let members: Vec<String> = members
            .members()
            .iter()
            .map(|m| format!("{} {}", m.name(), m.client_urls().join(" ")))
            .collect();
        let server_key = store.keys.server_key(&settings.holder);
        let lease = store.retried(|client| hold_key(client, server_key.clone(), settings.holder.clone()))?;
        store.runtime().spawn(keep_holding(
            store.keys.clone(),
            server_key,
            settings.holder.clone(),
            lease,
            store.follower.clone(),
        ));
        tracing::info!(endpoints = %endpoints, prefix = %settings.prefix, ?members, "registry kept in etcd");
        Ok(store)
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("the runtime lives as long as the store")
    }

    /// Runs `call` on the store's runtime (see [`Keys::retried`]).
    fn retried<T, F: Future<Output = Result<T, etcd_client::Error>>>(
        &self,
        call: impl FnMut(Client) -> F,
    ) -> Result<T, StoreError> {
        self.runtime().block_on(self.keys.retried(call))
    }
}

impl Keys {
    fn server_key(&self, node: &str) -> String {
        format!("{}servers/{node}", self.prefix)
    }

    fn instance_key(&self, id: &str) -> String {
        format!("{}instances/{id}", self.prefix)
    }

    fn error(&self, message: String) -> StoreError {
        StoreError::Etcd {
            endpoints: self.endpoints.clone(),
            message,
        }
    }

    /// Runs `call`, tried again until it succeeds or [`ATTEMPT_TIMEOUT`] per member has passed:
    /// the client spreads calls over the members at random and goes on sending some to a member
    /// that is down, where they fail at once or wait; another attempt likely goes to another
    /// member. Every call made this way may be made twice (a read, a write of the same values,
    /// a lease that expires if unused). The last error is [`StoreError::Etcd`].
    async fn retried<T, F: Future<Output = Result<T, etcd_client::Error>>>(
        &self,
        mut call: impl FnMut(Client) -> F,
    ) -> Result<T, StoreError> {
        let deadline = tokio::time::Instant::now() + ATTEMPT_TIMEOUT * self.members as u32;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let error = match tokio::time::timeout(left.min(ATTEMPT_TIMEOUT), call(self.client.clone())).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) => {
                    // Failed at once (a member refusing connections): not a busy loop.
                    tokio::time::sleep(RETRY_PAUSE).await;
                    error.to_string()
                }
                Err(_) => format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs()),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(self.error(error));
            }
        }
    }

    /// Reads every instance key, page by page, all at the revision of the first page (one
    /// consistent registry, however many pages), handing each to `each`; returns that revision.
    async fn read_instances(
        &self,
        mut each: impl FnMut(&KeyValue) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        let first = self.instance_key("");
        let end = prefix_end(first.as_bytes());
        let mut from = first.into_bytes();
        let mut revision = 0;
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let page = self
                .retried(|mut client| {
                    let (from, options) = (from.clone(), options.clone());
                    async move { client.get(from, Some(options)).await }
                })
                .await?;
            if revision == 0 {
                revision = page.header().map_or(0, |h| h.revision());
            }
            for kv in page.kvs() {
                each(kv)?;
            }
            match page.kvs().last() {
                Some(last) if page.more() => {
                    from = last.key().to_vec();
                    from.push(0); // the next key after it
                }
                _ => return Ok(u64::try_from(revision).unwrap_or(0)),
            }
        }
    }

    /// The instance ID a key under `<prefix>instances/` names.
    fn instance_id<'k>(&self, key: &'k [u8]) -> Option<&'k str> {
        let prefix = self.instance_key("");
        std::str::from_utf8(key.strip_prefix(prefix.as_bytes())?).ok()
    }

    /// An instance's record, with its indexes as etcd gives them (the revision that created the
    /// key, and the last one that changed it).
    fn decode(&self, kv: &KeyValue) -> Result<StoredInstance, StoreError> {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let corrupt = |message: String| StoreError::Corrupt {
            path: format!("etcd {}", self.endpoints),
            key: key.clone(),
            message,
        };
        let mut instance: StoredInstance = serde_json::from_slice(kv.value()).map_err(|e| corrupt(e.to_string()))?;
        if self.instance_id(kv.key()) != Some(instance.id.as_str()) {
            return Err(corrupt(format!("holds instance {:?}", instance.id)));
        }
        instance.create_index = u64::try_from(kv.create_revision()).unwrap_or(0);
        instance.modify_index = u64::try_from(kv.mod_revision()).unwrap_or(0);
        Ok(instance)
    }
}

impl Drop for EtcdStore {
    /// A runtime dropped the usual way waits for its tasks, which a thread that runs async code
    /// may not do: the last holder of the store can be such a thread (a start that fails).
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Store for EtcdStore {
    fn load(&self, each: &mut dyn FnMut(StoredInstance) -> Result<(), String>) -> Result<u64, StoreError> {
        let keys = &self.keys;
        self.runtime().block_on(keys.read_instances(|kv| {
            let instance = keys.decode(kv)?;
            each(instance).map_err(|message| StoreError::Corrupt {
                path: format!("etcd {}", keys.endpoints),
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                message,
            })
        }))
    }

    fn write(&self, batch: &Batch<'_>) -> Result<u64, StoreError> {
        let keys = &self.keys;
        // Each operation with its weight in the request: its key and value.
        let mut ops = Vec::with_capacity(batch.changes.len());
        for change in batch.changes {
            ops.push(match change {
                Change::Put(instance) => {
                    let (key, json) = (keys.instance_key(&instance.id), serde_json::to_vec(instance));
                    let json = json.map_err(|e| keys.error(e.to_string()))?;
                    let size = key.len() + json.len();
                    (TxnOp::put(key, json, None), size)
                }
                Change::Delete(id) => {
                    let key = keys.instance_key(id);
                    let size = key.len();
                    (TxnOp::delete(key, None), size)
                }
            });
        }
        // The batch in as few transactions as etcd takes, in order; the revision of the last.
        let mut revision = 0;
        let mut chunk = Vec::new();
        let mut bytes = 0;
        let mut ops = ops.into_iter().peekable();
        while let Some((op, size)) = ops.next() {
            bytes += size;
            chunk.push(op);
            let full = chunk.len() >= MAX_TXN_OPS || ops.peek().is_some_and(|(_, next)| bytes + next > MAX_TXN_BYTES);
            if full || ops.peek().is_none() {
                let txn = Txn::new().and_then(std::mem::take(&mut chunk));
                // Made again after a failed attempt, it writes the same values: no harm if the
                // first went through unseen.
                let response = self.retried(|mut client| {
                    let txn = txn.clone();
                    async move { client.txn(txn).await }
                })?;
                revision = response
                    .header()
                    .map_or(0, |h| u64::try_from(h.revision()).unwrap_or(0));
                bytes = 0;
            }
        }
        Ok(revision)
    }

    fn shared(&self) -> bool {
        true
    }

    fn follow(&self, from: u64, follower: Weak<dyn Follower>) {
        let _ = self.follower.set(follower.clone());
        self.runtime().spawn(follow(self.keys.clone(), from, follower));
    }
}

/// Applies every change to the instances after revision `from`, from one watch, in revision
/// order. A broken watch is opened again from where it stopped; one that lost its place (the
/// revisions it needs were compacted) reads the whole registry again and swaps it in.
async fn follow(keys: Keys, from: u64, follower: Weak<dyn Follower>) {
    let mut next = from + 1;
    let prefix = keys.instance_key("");
    loop {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(i64::try_from(next).unwrap_or(i64::MAX));
        let mut stream = match keys.client.clone().watch(prefix.clone(), Some(options)).await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%error, "cannot open the etcd watch yet");
                tokio::time::sleep(REWATCH_PAUSE).await;
                continue;
            }
        };
        loop {
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => break,
                Err(error) => {
                    tracing::debug!(%error, "the etcd watch broke; opening it again");
                    break;
                }
            };
            let Some(follower) = follower.upgrade() else {
                return; // the registry is gone: shutting down
            };
            if response.compact_revision() > 0 || (response.canceled() && !response.created()) {
                tracing::warn!(
                    from = next,
                    compacted = response.compact_revision(),
                    reason = response.cancel_reason(),
                    "the etcd watch lost its place: reading the registry again"
                );
                match reload(&keys, &*follower).await {
                    Ok(revision) => next = revision + 1,
                    Err(error) => tracing::warn!(%error, "cannot read the registry again yet"),
                }
                break;
            }
            // One response may hold several revisions, each one transaction: applied one by one.
            let mut changes = Vec::new();
            let mut at = 0;
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let revision = u64::try_from(kv.mod_revision()).unwrap_or(0);
                if revision != at && !changes.is_empty() {
                    follower.changed(at, std::mem::take(&mut changes));
                }
                at = revision;
                match (event.event_type(), keys.instance_id(kv.key())) {
                    (EventType::Delete, Some(id)) => changes.push(Change::Delete(id.to_string())),
                    (EventType::Put, Some(_)) => match keys.decode(kv) {
                        Ok(instance) => changes.push(Change::Put(Box::new(instance))),
                        Err(error) => tracing::error!(%error, "an instance record in etcd cannot be read: skipped"),
                    },
                    _ => {}
                }
            }
            if at > 0 {
                follower.changed(at, changes);
                next = at + 1;
            }
        }
        tokio::time::sleep(REWATCH_PAUSE).await;
    }
}

/// Reads the whole registry again and hands the follower what differs from its view.
async fn reload(keys: &Keys, follower: &dyn Follower) -> Result<u64, StoreError> {
    let mut changed = Vec::new();
    let mut present = HashSet::new();
    let revision = keys
        .read_instances(|kv| {
            let Some(id) = keys.instance_id(kv.key()) else {
                return Ok(());
            };
            present.insert(id.to_string());
            if follower.modify_index(id) != u64::try_from(kv.mod_revision()).ok() {
                match keys.decode(kv) {
                    Ok(instance) => changed.push(instance),
                    Err(error) => tracing::error!(%error, "an instance record in etcd cannot be read: skipped"),
                }
            }
            Ok(())
        })
        .await?;
    tracing::info!(
        revision,
        instances = present.len(),
        changed = changed.len(),
        "registry read again from etcd"
    );
    follower.reloaded(revision, changed, present);
    Ok(revision)
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // the whole key space
}

async fn connect(settings: &EtcdSettings) -> Result<Client, String> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(CONNECT_TIMEOUT)
        .with_keep_alive(Duration::from_secs(5), CONNECT_TIMEOUT);
    if let Some((user, password)) = &settings.user {
        options = options.with_user(user.clone(), password.clone());
    }
    if settings.ca.is_some() || settings.cert.is_some() {
        let read = |path: &PathBuf| std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()));
        let mut tls = TlsOptions::new();
        if let Some(ca) = &settings.ca {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&settings.cert, &settings.key) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        options = options.with_tls(tls);
    }
    let connecting = Client::connect(settings.endpoints.clone(), Some(options));
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())),
    }
}

/// Writes this server's key on a new lease; returns the lease.
async fn hold_key(mut client: Client, key: String, holder: String) -> Result<i64, etcd_client::Error> {
    let lease = client.lease_grant(LEASE_TTL, None).await?.id();
    client
        .put(key, holder, Some(PutOptions::new().with_lease(lease)))
        .await?;
    Ok(lease)
}

/// Renews this server's lease every [`RENEW_EVERY`], telling the follower when etcd goes out of
/// reach and comes back; a lease that ran out meanwhile is replaced.
async fn keep_holding(
    keys: Keys,
    key: String,
    holder: String,
    mut lease: i64,
    follower: Arc<OnceLock<Weak<dyn Follower>>>,
) {
    let mut reachable = true;
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let mut keeper = keys.client.clone();
        let renewed = tokio::time::timeout(ATTEMPT_TIMEOUT, async {
            let (mut sender, mut stream) = keeper.lease_keep_alive(lease).await?;
            sender.keep_alive().await?;
            Ok::<_, etcd_client::Error>(stream.message().await?.is_some_and(|r| r.ttl() > 0))
        })
        .await;
        let now_reachable = match renewed {
            Ok(Ok(true)) => true,
            Ok(Ok(false)) => match hold_key(keys.client.clone(), key.clone(), holder.clone()).await {
                Ok(new) => {
                    lease = new;
                    tracing::warn!("this server's lease in etcd had run out; taken again");
                    true
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot take a lease in etcd again yet");
                    false
                }
            },
            Ok(Err(error)) => {
                tracing::debug!(%error, "cannot renew this server's lease in etcd");
                false
            }
            Err(_) => false,
        };
        if now_reachable != reachable {
            reachable = now_reachable;
            if reachable {
                tracing::info!(endpoints = %keys.endpoints, "etcd can be reached again");
            } else {
                tracing::warn!(endpoints = %keys.endpoints, "etcd cannot be reached: serving the last registry seen");
            }
            if let Some(follower) = follower.get().and_then(Weak::upgrade) {
                follower.reachable(reachable);
            }
        }
    }
}
