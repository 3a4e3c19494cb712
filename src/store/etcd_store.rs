//! The registry kept in etcd (`--etcd`): one key per instance under the prefix
//! (`<prefix>instances/<id>`, the same JSON record as the embedded store's), and the registry's
//! index beside them (`<prefix>index`). A write is one etcd transaction (several when a group
//! commit holds more than etcd takes in one), and it succeeds only while this server holds the
//! prefix: until servers share one registry through etcd's watch, one server writes a prefix, and
//! a second is refused at start rather than left to overwrite the first.
//!
//! The journal calls the store from its own thread, so the store runs the async client on a
//! runtime of its own, with a bound on every call: etcd out of reach is a refused write (503),
//! never a hung one, and one member down is no refusal at all (a call goes on to the next).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, TlsOptions, Txn, TxnOp,
};

use super::{Batch, Change, Store, StoreError, StoredInstance};

/// How long connecting to etcd may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one attempt of a call may take; a call is tried again for as long per member.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// The pause after an attempt that failed at once.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// The lease behind this server's hold on the prefix: how long after this server stops talking
/// to etcd another server may take the prefix.
const LEASE_TTL: i64 = 10;
/// etcd refuses a transaction of more than 128 operations (`--max-txn-ops`) or 1.5 MiB
/// (`--max-request-bytes`) by default: a larger batch goes in several.
const MAX_TXN_OPS: usize = 100;
const MAX_TXN_BYTES: usize = 1 << 20;
/// Instances read per request at start: 100,000 instances never come as one response.
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
    /// Who holds the prefix, as the other servers are told: this node's name.
    pub holder: String,
}

pub struct EtcdStore {
    /// Runs the client: the journal's thread blocks on it. Taken when dropped (see `Drop`).
    runtime: Option<tokio::runtime::Runtime>,
    client: Client,
    prefix: String,
    /// The endpoints, for messages.
    endpoints: String,
    /// How many members there are: a call is tried for [`ATTEMPT_TIMEOUT`] per member.
    members: usize,
    /// The lease that holds the prefix; its key is written only while it is this lease's.
    lease: Arc<AtomicI64>,
}

impl EtcdStore {
    /// Connects, and takes the prefix for this server (refused when another live server holds it).
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
        let store = Self {
            runtime: Some(runtime),
            client,
            prefix: settings.prefix.clone(),
            endpoints: endpoints.clone(),
            members: settings.endpoints.len().max(1),
            lease: Arc::new(AtomicI64::new(0)),
        };
        let lease = store.retried(|client| take_prefix(client, store.lock_key(), settings.holder.clone()))?;
        match lease {
            Ok(lease) => store.lease.store(lease, Ordering::Relaxed),
            Err(holder) => {
                return Err(StoreError::Open {
                    path: format!("etcd {endpoints} prefix {}", settings.prefix),
                    message: format!(
                        "another sextant server ({holder}) keeps its registry under this prefix: \
                         stop it, or give this server another --etcd-prefix"
                    ),
                });
            }
        }
        store.runtime().spawn(keep_prefix(
            store.client.clone(),
            store.lock_key(),
            settings.holder.clone(),
            store.lease.clone(),
        ));
        tracing::info!(endpoints = %endpoints, prefix = %settings.prefix, "registry kept in etcd");
        Ok(store)
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("the runtime lives as long as the store")
    }

    fn lock_key(&self) -> String {
        format!("{}server", self.prefix)
    }

    fn instance_key(&self, id: &str) -> String {
        format!("{}instances/{id}", self.prefix)
    }

    /// Runs `call` on the store's runtime, tried again until it succeeds or [`ATTEMPT_TIMEOUT`]
    /// per member has passed: the client spreads calls over the members at random and goes on
    /// sending some to a member that is down, where they fail at once or wait; another attempt
    /// likely goes to another member. Every call made this way may be made twice (a read, a
    /// write of the same values, a lease that expires if unused). The last error is
    /// [`StoreError::Etcd`].
    fn retried<T, F: Future<Output = Result<T, etcd_client::Error>>>(
        &self,
        mut call: impl FnMut(Client) -> F,
    ) -> Result<T, StoreError> {
        let deadline = std::time::Instant::now() + ATTEMPT_TIMEOUT * self.members as u32;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let attempt = call(self.client.clone());
            let bounded = async {
                let outcome = tokio::time::timeout(left.min(ATTEMPT_TIMEOUT), attempt).await;
                if matches!(outcome, Ok(Err(_))) {
                    // Failed at once (a member refusing connections): not a busy loop.
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                outcome
            };
            let error = match self.runtime().block_on(bounded) {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs()),
            };
            if std::time::Instant::now() >= deadline {
                return Err(self.error(error));
            }
        }
    }

    fn error(&self, message: String) -> StoreError {
        StoreError::Etcd {
            endpoints: self.endpoints.clone(),
            message,
        }
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
        let first = self.instance_key("");
        let end = prefix_end(first.as_bytes());
        let mut from = first.into_bytes();
        // Every page at the revision of the first: one consistent registry, however many pages.
        let mut revision = 0;
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let page = self.retried(|mut client| {
                let (from, options) = (from.clone(), options.clone());
                async move { client.get(from, Some(options)).await }
            })?;
            if revision == 0 {
                revision = page.header().map_or(0, |h| h.revision());
            }
            for kv in page.kvs() {
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                let corrupt = |message: String| StoreError::Corrupt {
                    path: format!("etcd {}", self.endpoints),
                    key: key.clone(),
                    message,
                };
                let instance: StoredInstance =
                    serde_json::from_slice(kv.value()).map_err(|e| corrupt(e.to_string()))?;
                if self.instance_key(&instance.id) != key {
                    return Err(corrupt(format!("holds instance {:?}", instance.id)));
                }
                each(instance).map_err(corrupt)?;
            }
            match page.kvs().last() {
                Some(last) if page.more() => {
                    from = last.key().to_vec();
                    from.push(0); // the next key after it
                }
                _ => break,
            }
        }
        let index_key = format!("{}index", self.prefix);
        let index = self.retried(|mut client| {
            let (key, options) = (index_key.clone(), GetOptions::new().with_revision(revision));
            async move { client.get(key, Some(options)).await }
        })?;
        let index = match index.kvs().first() {
            Some(kv) => String::from_utf8_lossy(kv.value())
                .parse::<u64>()
                .map_err(|e| StoreError::Corrupt {
                    path: format!("etcd {}", self.endpoints),
                    key: format!("{}index", self.prefix),
                    message: e.to_string(),
                })?,
            None => 0,
        };
        Ok(index)
    }

    fn write(&self, batch: &Batch<'_>) -> Result<(), StoreError> {
        // Each operation with its weight in the request: its key and value.
        let mut ops = Vec::with_capacity(batch.changes.len() + 1);
        for change in batch.changes {
            ops.push(match change {
                Change::Put(instance) => {
                    let (key, json) = (self.instance_key(&instance.id), serde_json::to_vec(instance));
                    let json = json.map_err(|e| self.error(e.to_string()))?;
                    let size = key.len() + json.len();
                    (TxnOp::put(key, json, None), size)
                }
                Change::Delete(id) => {
                    let key = self.instance_key(id);
                    let size = key.len();
                    (TxnOp::delete(key, None), size)
                }
            });
        }
        let index = batch.index.to_string();
        let size = self.prefix.len() + 5 + index.len();
        ops.push((TxnOp::put(format!("{}index", self.prefix), index, None), size));
        // The batch in as few transactions as etcd takes, in order, the index last.
        let mut chunk = Vec::new();
        let mut bytes = 0;
        let mut ops = ops.into_iter().peekable();
        while let Some((op, size)) = ops.next() {
            bytes += size;
            chunk.push(op);
            let full = chunk.len() >= MAX_TXN_OPS || ops.peek().is_some_and(|(_, next)| bytes + next > MAX_TXN_BYTES);
            if full || ops.peek().is_none() {
                self.commit(std::mem::take(&mut chunk))?;
                bytes = 0;
            }
        }
        Ok(())
    }
}

impl EtcdStore {
    /// One transaction, made only while this server's lease holds the prefix.
    fn commit(&self, ops: Vec<TxnOp>) -> Result<(), StoreError> {
        let lease = self.lease.load(Ordering::Relaxed);
        let txn = Txn::new()
            .when([Compare::lease(self.lock_key(), CompareOp::Equal, lease)])
            .and_then(ops);
        // Made again after a failed attempt, it writes the same values: no harm if the first
        // went through unseen.
        let response = self.retried(|mut client| {
            let txn = txn.clone();
            async move { client.txn(txn).await }
        })?;
        if !response.succeeded() {
            return Err(self.error(
                "this server no longer holds the prefix (its lease ran out while etcd was out of reach)".into(),
            ));
        }
        Ok(())
    }
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

/// Takes the prefix: the lock key is written with a new lease if no live server holds it, or if
/// this node holds it (its earlier life, killed before its lease ran out: node names are unique
/// in a cluster). `Ok(Err(holder))` when another server does.
async fn take_prefix(
    mut client: Client,
    lock_key: String,
    holder: String,
) -> Result<Result<i64, String>, etcd_client::Error> {
    let lease = client.lease_grant(LEASE_TTL, None).await?.id();
    let put = || {
        TxnOp::put(
            lock_key.clone(),
            holder.clone(),
            Some(etcd_client::PutOptions::new().with_lease(lease)),
        )
    };
    let unheld = Compare::create_revision(lock_key.clone(), CompareOp::Equal, 0);
    let ours = Compare::value(lock_key.clone(), CompareOp::Equal, holder.clone());
    for condition in [unheld, ours] {
        let txn = Txn::new()
            .when([condition])
            .and_then([put()])
            .or_else([TxnOp::get(lock_key.clone(), None)]);
        let response = client.txn(txn).await?;
        if response.succeeded() {
            return Ok(Ok(lease));
        }
        let current = response.op_responses().into_iter().find_map(|op| match op {
            etcd_client::TxnOpResponse::Get(get) => get
                .kvs()
                .first()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
            _ => None,
        });
        if current.as_deref() != Some(holder.as_str()) {
            let _ = client.lease_revoke(lease).await;
            return Ok(Err(current.unwrap_or_else(|| "unknown".into())));
        }
    }
    let _ = client.lease_revoke(lease).await;
    Ok(Err(holder))
}

/// Keeps the lease alive; when it has run out (etcd was out of reach longer than its TTL), takes
/// the prefix again if no other server took it meanwhile.
async fn keep_prefix(client: Client, lock_key: String, holder: String, lease: Arc<AtomicI64>) {
    let interval = Duration::from_secs((LEASE_TTL / 3).max(1) as u64);
    loop {
        tokio::time::sleep(interval).await;
        let current = lease.load(Ordering::Relaxed);
        let mut keeper = client.clone();
        let alive = tokio::time::timeout(ATTEMPT_TIMEOUT, async {
            let (mut sender, mut stream) = keeper.lease_keep_alive(current).await?;
            sender.keep_alive().await?;
            Ok::<_, etcd_client::Error>(stream.message().await?.is_some_and(|r| r.ttl() > 0))
        })
        .await;
        match alive {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => match take_prefix(client.clone(), lock_key.clone(), holder.clone()).await {
                Ok(Ok(new)) => {
                    lease.store(new, Ordering::Relaxed);
                    tracing::warn!("the hold on the etcd prefix had run out; taken again");
                }
                Ok(Err(other)) => {
                    tracing::error!(%other, "another sextant server took the etcd prefix: writes are refused");
                }
                Err(error) => tracing::warn!(%error, "cannot take the etcd prefix again yet"),
            },
            Ok(Err(error)) => tracing::warn!(%error, "cannot reach etcd to keep the prefix"),
            Err(_) => tracing::warn!("etcd did not answer in time to keep the prefix"),
        }
    }
}
