//! The registry kept in etcd (`--etcd`): one key per instance under the prefix
//! (`<prefix>instances/<id>`, the same JSON record as the embedded store's), written by every
//! server that shares the prefix. etcd is the log and each server's registry a view of it: a
//! write is one etcd transaction (several when a group commit holds more than etcd takes in
//! one), and every server, the writer included, applies the changes from one watch in revision
//! order ([`follow`]). The revision is the registry's index, the same on every server.
//!
//! Each server also keeps a key of its own, `<prefix>servers/<node>`, on a lease: the servers
//! alive are the keys there (which is how checks are shared out among them), and while etcd
//! renews this server's lease, this server can reach a quorum. A TTL check's heartbeats renew a
//! lease of the check's own, behind `<prefix>heartbeats/<check>`: renewing a lease is not a
//! write in etcd (the leader keeps leases in memory), so heartbeats cost etcd no disk, and when
//! none reaches any server for the TTL, etcd removes the key and the check's owner turns it
//! critical.
//!
//! etcd keeps every revision until it is compacted, and by default never compacts: each server
//! compacts what is older than [`COMPACT_EVERY`] (as Kubernetes' API server does), so the
//! history stays as large as a few minutes of writes.
//!
//! The journal calls the store from its own thread, so the store runs the async client on a
//! runtime of its own, with a bound on every call: etcd out of reach is a refused write (503),
//! never a hung one, and one member down is no refusal at all (a call goes on to the next).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, Identity, KeyValue,
    PutOptions, TlsOptions, Txn, TxnOp, WatchOptions,
};

use super::{
    Batch, Change, Cluster, Follower, KvCondition, KvOp, KvRecord, Lease, Logged, Store, StoreError, StoredInstance,
    StoredNode,
};

/// How long connecting to etcd may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one attempt of a call may take; a call is tried again for as long per member.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// The pause after an attempt that failed at once.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How often the lease is renewed, which is also how soon this server learns that etcd (a
/// quorum of it) is out of reach, or back.
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How often a connection to etcd is pinged, and how long an answer may take.
const KEEPALIVE: Duration = Duration::from_secs(2);
/// How long a broken watch waits before it is opened again.
const REWATCH_PAUSE: Duration = Duration::from_millis(200);
/// etcd refuses a transaction of more than 128 operations (`--max-txn-ops`) or 1.5 MiB
/// (`--max-request-bytes`) by default: a larger batch goes in several.
const MAX_TXN_OPS: usize = 100;
const MAX_TXN_BYTES: usize = 1 << 20;
/// Keys read per request: 100,000 instances never come as one response.
const PAGE: i64 = 1000;
/// How often the history is compacted, and how much of it is kept: a server whose watch falls
/// further behind than this reads the registry again.
const COMPACT_EVERY: Duration = Duration::from_secs(5 * 60);

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
    pub node_name: String,
    /// The lease behind this server's key: how long after this server stops renewing it (dies,
    /// or loses etcd) the others see it gone and take its checks over.
    pub lease_ttl: Duration,
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
    /// This server's name.
    me: String,
    /// The TTL of this server's lease, in seconds.
    lease_ttl: i64,
}

pub struct EtcdStore {
    /// Runs the client: the journal's thread blocks on it. Taken when dropped (see `Drop`).
    runtime: Option<tokio::runtime::Runtime>,
    keys: Keys,
    /// Who hears whether etcd can be reached, once the registry follows the store.
    follower: Arc<OnceLock<Weak<dyn Follower>>>,
    /// The revision the registry was loaded at: the key/value entries are read at it too.
    loaded_at: std::sync::atomic::AtomicU64,
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
            // Heartbeats, the watch, the lease: I/O only (applying runs on a thread of its own).
            .worker_threads(2)
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
            me: settings.node_name.clone(),
            lease_ttl: i64::try_from(settings.lease_ttl.as_secs()).unwrap_or(10).max(2),
        };
        let store = Self {
            runtime: Some(runtime),
            keys,
            follower: Arc::new(OnceLock::new()),
            loaded_at: std::sync::atomic::AtomicU64::new(0),
        };
        let members = store.retried(|mut client| async move { client.member_list().await })?;
        let members: Vec<String> = members
            .members()
            .iter()
            .map(|m| format!("{} {}", m.name(), m.client_urls().join(" ")))
            .collect();
        let lease = store.runtime().block_on(store.keys.hold_key())?;
        store
            .runtime()
            .spawn(keep_holding(store.keys.clone(), lease, store.follower.clone()));
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
    /// Writes this server's key, `<prefix>servers/<node>`, on a new lease; returns the lease.
    async fn hold_key(&self) -> Result<i64, StoreError> {
        let key = format!("{}servers/{}", self.prefix, self.me);
        self.retried(|mut client| {
            let (key, me, ttl) = (key.clone(), self.me.clone(), self.lease_ttl);
            async move {
                let lease = client.lease_grant(ttl, None).await?.id();
                client.put(key, me, Some(PutOptions::new().with_lease(lease))).await?;
                Ok(lease)
            }
        })
        .await
    }

    fn instance_key(&self, id: &str) -> String {
        format!("{}instances/{id}", self.prefix)
    }

    fn node_key(&self, name: &str) -> String {
        format!("{}nodes/{name}", self.prefix)
    }

    /// A node's record, with its indexes as etcd gives them.
    fn decode_node(&self, name: &str, kv: &KeyValue) -> Result<StoredNode, StoreError> {
        let corrupt = |message: String| StoreError::Corrupt {
            path: format!("etcd {}", self.endpoints),
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            message,
        };
        let mut node: StoredNode = serde_json::from_slice(kv.value()).map_err(|e| corrupt(e.to_string()))?;
        if node.name.to_ascii_lowercase() != name {
            return Err(corrupt(format!("holds node {:?}", node.name)));
        }
        node.create_index = u64::try_from(kv.create_revision()).unwrap_or(0);
        node.modify_index = u64::try_from(kv.mod_revision()).unwrap_or(0);
        Ok(node)
    }

    /// Every node at revision `at` (the latest when 0); and that revision.
    async fn read_nodes(&self, at: u64) -> Result<(Vec<StoredNode>, u64), StoreError> {
        let mut nodes = Vec::new();
        let revision = self
            .read_range("nodes/", at, |kv| {
                if let Some((Kind::Node, name)) = self.kind(kv.key()) {
                    nodes.push(self.decode_node(name, kv)?);
                }
                Ok(())
            })
            .await?;
        Ok((nodes, revision))
    }

    fn kv_key(&self, key: &str) -> String {
        format!("{}kv/{key}", self.prefix)
    }

    /// A key/value entry, with its indexes as etcd gives them.
    fn decode_kv(&self, name: &str, kv: &KeyValue) -> Result<KvRecord, StoreError> {
        let mut record = KvRecord::decode(name, kv.value()).map_err(|message| StoreError::Corrupt {
            path: format!("etcd {}", self.endpoints),
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            message,
        })?;
        record.create_index = u64::try_from(kv.create_revision()).unwrap_or(0);
        record.modify_index = u64::try_from(kv.mod_revision()).unwrap_or(0);
        Ok(record)
    }

    /// Every key/value entry at revision `at`; one that cannot be read (written by something
    /// else than sextant) is logged and left out, as the watch leaves it out.
    async fn read_kv(&self, at: u64) -> Result<Vec<KvRecord>, StoreError> {
        let mut records = Vec::new();
        self.read_range("kv/", at, |kv| {
            if let Some((Kind::Kv, name)) = self.kind(kv.key()) {
                match self.decode_kv(name, kv) {
                    Ok(record) => records.push(record),
                    Err(error) => tracing::error!(%error, "a key/value entry in etcd cannot be read: skipped"),
                }
            }
            Ok(())
        })
        .await?;
        Ok(records)
    }

    /// One change as an etcd operation, with its weight in the request (its key and value).
    fn op(&self, change: &Change) -> Result<(TxnOp, usize), StoreError> {
        let json = |value: Result<Vec<u8>, serde_json::Error>| value.map_err(|e| self.error(e.to_string()));
        Ok(match change {
            Change::Put(instance) => {
                let (key, json) = (self.instance_key(&instance.id), json(serde_json::to_vec(instance))?);
                let size = key.len() + json.len();
                (TxnOp::put(key, json, None), size)
            }
            // A transaction of its own inside the batch's (etcd 3.3 or later): its condition
            // holds this change back alone.
            Change::PutIfUnchanged(instance, index) => {
                let (key, json) = (self.instance_key(&instance.id), json(serde_json::to_vec(instance))?);
                let size = key.len() + json.len();
                let at = i64::try_from(*index).unwrap_or(i64::MAX);
                let unchanged = Compare::mod_revision(key.clone(), CompareOp::Equal, at);
                let put = TxnOp::put(key, json, None);
                (TxnOp::txn(Txn::new().when([unchanged]).and_then([put])), size)
            }
            Change::Delete(id) => {
                let key = self.instance_key(id);
                let size = key.len();
                (TxnOp::delete(key, None), size)
            }
            Change::PutNode(node) => {
                let key = self.node_key(&node.name.to_ascii_lowercase());
                let json = json(serde_json::to_vec(node))?;
                let size = key.len() + json.len();
                (TxnOp::put(key, json, None), size)
            }
            Change::DeleteNode(name) => {
                let key = self.node_key(name);
                let size = key.len();
                (TxnOp::delete(key, None), size)
            }
            Change::Group(_) | Change::Kv(_) => return Err(self.error("not one change".into())),
        })
    }

    fn heartbeat_key(&self, check: &str) -> String {
        format!("{}heartbeats/{check}", self.prefix)
    }

    /// What a key under the prefix is, and the name in it.
    fn kind<'k>(&self, key: &'k [u8]) -> Option<(Kind, &'k str)> {
        let rest = key.strip_prefix(self.prefix.as_bytes())?;
        let rest = std::str::from_utf8(rest).ok()?;
        let (kind, name) = rest.split_once('/')?;
        let kind = match kind {
            "instances" => Kind::Instance,
            "servers" => Kind::Server,
            "heartbeats" => Kind::Heartbeat,
            "kv" => Kind::Kv,
            "nodes" => Kind::Node,
            _ => return None,
        };
        Some((kind, name))
    }

    /// A heartbeat key's lease: the lease it is on, and the TTL written in it.
    fn lease(kv: &KeyValue) -> Option<Lease> {
        let ttl_secs = std::str::from_utf8(kv.value()).ok()?.parse().ok()?;
        (kv.lease() != 0).then_some(Lease {
            id: kv.lease(),
            ttl_secs,
        })
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

    /// Reads every key under `<prefix><under>`, page by page, all at one revision (`at`, or the
    /// latest when 0: one consistent registry, however many pages), handing each to `each`;
    /// returns that revision.
    async fn read_range(
        &self,
        under: &str,
        at: u64,
        mut each: impl FnMut(&KeyValue) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        let first = format!("{}{under}", self.prefix);
        let end = prefix_end(first.as_bytes());
        let mut from = first.into_bytes();
        let mut revision = i64::try_from(at).unwrap_or(i64::MAX);
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

    /// The servers and heartbeat leases at revision `at`.
    async fn read_cluster(&self, at: u64) -> Result<Cluster, StoreError> {
        let mut cluster = Cluster {
            me: self.me.clone(),
            ..Cluster::default()
        };
        self.read_range("servers/", at, |kv| {
            if let Some((Kind::Server, name)) = self.kind(kv.key()) {
                cluster.servers.push(name.to_owned());
            }
            Ok(())
        })
        .await?;
        self.read_range("heartbeats/", at, |kv| {
            if let (Some((Kind::Heartbeat, check)), Some(lease)) = (self.kind(kv.key()), Self::lease(kv)) {
                cluster.heartbeats.push((check.to_owned(), lease));
            }
            Ok(())
        })
        .await?;
        Ok(cluster)
    }

    /// The instance ID a key under `<prefix>instances/` names.
    fn instance_id<'k>(&self, key: &'k [u8]) -> Option<&'k str> {
        match self.kind(key)? {
            (Kind::Instance, id) => Some(id),
            _ => None,
        }
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
    /// At the revision the nodes were read at (which the instances that name them are read at).
    fn load(&self, each: &mut dyn FnMut(StoredInstance) -> Result<(), String>) -> Result<u64, StoreError> {
        let keys = &self.keys;
        let at = self.loaded_at.load(std::sync::atomic::Ordering::Acquire);
        let revision = self.runtime().block_on(keys.read_range("instances/", at, |kv| {
            let instance = keys.decode(kv)?;
            each(instance).map_err(|message| StoreError::Corrupt {
                path: format!("etcd {}", keys.endpoints),
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                message,
            })
        }))?;
        self.loaded_at.store(revision, std::sync::atomic::Ordering::Release);
        Ok(revision)
    }

    /// At the revision the instances were loaded at: the watch goes on from there.
    fn load_kv(&self, each: &mut dyn FnMut(KvRecord) -> Result<(), String>) -> Result<(), StoreError> {
        let at = self.loaded_at.load(std::sync::atomic::Ordering::Acquire);
        for record in self.runtime().block_on(self.keys.read_kv(at))? {
            let key = self.keys.kv_key(&record.key);
            each(record).map_err(|message| StoreError::Corrupt {
                path: format!("etcd {}", self.keys.endpoints),
                key,
                message,
            })?;
        }
        Ok(())
    }

    fn keeps_kv(&self) -> bool {
        true
    }

    /// First at start: the revision read at is the one everything else is read at.
    fn load_nodes(&self, each: &mut dyn FnMut(StoredNode) -> Result<(), String>) -> Result<(), StoreError> {
        let (nodes, revision) = self.runtime().block_on(self.keys.read_nodes(0))?;
        self.loaded_at.store(revision, std::sync::atomic::Ordering::Release);
        for node in nodes {
            let key = self.keys.node_key(&node.name);
            each(node).map_err(|message| StoreError::Corrupt {
                path: format!("etcd {}", self.keys.endpoints),
                key,
                message,
            })?;
        }
        Ok(())
    }

    fn keeps_nodes(&self) -> bool {
        true
    }

    fn write_kv(
        &self,
        ops: Vec<KvOp>,
        condition: Option<KvCondition>,
        then: Box<dyn FnOnce(Result<Option<u64>, StoreError>) + Send>,
    ) {
        let keys = self.keys.clone();
        self.runtime().spawn(async move {
            then(write_kv(&keys, ops, condition).await);
        });
    }

    fn write(&self, batch: &Batch<'_>) -> Result<u64, StoreError> {
        let keys = &self.keys;
        // Key/value writes come through `write_kv`.
        if batch.changes.iter().any(|c| matches!(c, Change::Kv(_))) {
            return Err(keys.error("key/value writes go through write_kv".into()));
        }
        // etcd refuses a transaction that writes one key twice: of several changes to one
        // instance in a batch (each made on top of the one before), the last is the one to make.
        // A group (a catalog write) is made whole, in a transaction of its own.
        let id = |change: &Change| match change {
            Change::Put(instance) | Change::PutIfUnchanged(instance, _) => Some(instance.id.clone()),
            Change::Delete(id) => Some(id.clone()),
            _ => None,
        };
        let last: std::collections::HashMap<String, usize> = batch
            .changes
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((id(c)?, i)))
            .collect();
        // The operations, each with its weight in the request (its key and value), in runs:
        // a run of single changes goes in as few transactions as etcd takes; a group alone.
        let mut runs: Vec<(bool, Vec<(TxnOp, usize)>)> = Vec::new();
        for (i, change) in batch.changes.iter().enumerate() {
            if id(change).is_some_and(|id| last.get(&id) != Some(&i)) {
                continue;
            }
            let group = matches!(change, Change::Group(_));
            let mut ops = Vec::new();
            for member in change.members() {
                ops.push(keys.op(member)?);
            }
            match runs.last_mut() {
                Some((false, run)) if !group => run.extend(ops),
                _ => runs.push((group, ops)),
            }
        }
        let mut revision = 0;
        for (_, ops) in runs {
            let mut chunk = Vec::new();
            let mut bytes = 0;
            let mut ops = ops.into_iter().peekable();
            while let Some((op, size)) = ops.next() {
                bytes += size;
                chunk.push(op);
                // A group larger than etcd takes at once (a node with a hundred services
                // removed) goes in several, its node last.
                let full =
                    chunk.len() >= MAX_TXN_OPS || ops.peek().is_some_and(|(_, next)| bytes + next > MAX_TXN_BYTES);
                if full || ops.peek().is_none() {
                    let txn = Txn::new().and_then(std::mem::take(&mut chunk));
                    // Made again after a failed attempt, it writes the same values: no harm if
                    // the first went through unseen.
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
        }
        Ok(revision)
    }

    fn shared(&self) -> bool {
        true
    }

    fn follow(&self, from: u64, follower: Weak<dyn Follower>) {
        let _ = self.follower.set(follower.clone());
        self.runtime().spawn(follow(self.keys.clone(), from, follower));
        self.runtime().spawn(compact(self.keys.clone()));
    }

    fn heartbeat(
        &self,
        check: &str,
        ttl: Duration,
        lease: Option<Lease>,
        then: Box<dyn FnOnce(Result<(), StoreError>) + Send>,
    ) {
        let keys = self.keys.clone();
        let check = check.to_owned();
        self.runtime().spawn(async move {
            then(heartbeat(&keys, &check, ttl, lease).await);
        });
    }
}

/// What a key under the prefix holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Instance,
    Server,
    Heartbeat,
    Kv,
    Node,
}

/// Renews a TTL check's lease; takes a new one, with the check's key on it, when there is
/// none, it ran out, or the check's TTL changed.
async fn heartbeat(keys: &Keys, check: &str, ttl: Duration, lease: Option<Lease>) -> Result<(), StoreError> {
    let ttl_secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    if let Some(lease) = lease.filter(|l| l.ttl_secs == ttl_secs)
        && keys.retried(|client| renew(client, lease.id)).await?
    {
        return Ok(());
    }
    let key = keys.heartbeat_key(check);
    keys.retried(|mut client| {
        let key = key.clone();
        async move {
            let lease = client
                .lease_grant(i64::try_from(ttl_secs).unwrap_or(i64::MAX), None)
                .await?
                .id();
            client
                .put(key, ttl_secs.to_string(), Some(PutOptions::new().with_lease(lease)))
                .await?;
            Ok(())
        }
    })
    .await
}

/// Renews a lease once; false when it has run out (etcd no longer knows it).
async fn renew(mut client: Client, lease: i64) -> Result<bool, etcd_client::Error> {
    // Opening the keep-alive stream sends the first renewal and reads its answer: that is the
    // renewal. An answer with no TTL left is the client's "lease not found".
    match client.lease_keep_alive(lease).await {
        Ok(_) => Ok(true),
        Err(etcd_client::Error::LeaseKeepAliveError(message)) if message == "lease not found" => Ok(false),
        Err(error) => Err(error),
    }
}

/// What the watch hands the applying thread, in order.
enum Feed {
    Changed(u64, Vec<Logged>),
    Reloaded(u64, Option<(Vec<StoredInstance>, HashSet<String>)>, Cluster),
}

/// How many revisions may wait for the applying thread before the watch waits for it.
const FEED_DEPTH: usize = 1024;

/// Applies every change under the prefix after revision `from`, from one watch, in revision
/// order: first the servers and heartbeat leases as they were at `from` (the instances were
/// loaded at it), then each revision's changes. A broken watch is opened again from where it
/// stopped; one that lost its place (the revisions it needs were compacted) reads everything
/// again and swaps it in.
///
/// Applying (decoding records, recompiling answers) runs on a thread of its own, fed in order:
/// on this runtime it would hold up the etcd client's I/O, which the journal's commits wait on.
async fn follow(keys: Keys, from: u64, follower: Weak<dyn Follower>) {
    let (feed, mut fed) = tokio::sync::mpsc::channel::<Feed>(FEED_DEPTH);
    let applier = follower.clone();
    let spawned = std::thread::Builder::new().name("etcd-apply".into()).spawn(move || {
        while let Some(item) = fed.blocking_recv() {
            let Some(follower) = applier.upgrade() else { return };
            match item {
                Feed::Changed(index, changes) => follower.changed(index, changes),
                Feed::Reloaded(index, instances, cluster) => follower.reloaded(index, instances, cluster),
            }
        }
    });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start the thread that applies etcd's changes");
        return;
    }
    let mut next = loop {
        let Some(live) = follower.upgrade() else { return };
        match keys.read_cluster(from).await {
            Ok(cluster) => {
                tracing::info!(servers = ?cluster.servers, "sextant servers on this prefix");
                if feed.send(Feed::Reloaded(from, None, cluster)).await.is_err() {
                    return;
                }
                break from + 1;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the servers on this prefix yet");
                match reload(&keys, &*live, &feed).await {
                    Ok(revision) => break revision + 1,
                    Err(_) => tokio::time::sleep(REWATCH_PAUSE).await,
                }
            }
        }
    };
    loop {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(i64::try_from(next).unwrap_or(i64::MAX));
        let mut stream = match keys.client.clone().watch(keys.prefix.clone(), Some(options)).await {
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
                    tracing::warn!(%error, from = next, "the etcd watch broke; opening it again");
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
                match reload(&keys, &*follower, &feed).await {
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
                if revision != at
                    && at > 0
                    && feed
                        .send(Feed::Changed(at, std::mem::take(&mut changes)))
                        .await
                        .is_err()
                {
                    return;
                }
                at = revision;
                if let Some(change) = logged(&keys, event.event_type(), kv) {
                    changes.push(change);
                }
            }
            if at > 0 {
                if feed.send(Feed::Changed(at, changes)).await.is_err() {
                    return;
                }
                next = at + 1;
            }
        }
        tokio::time::sleep(REWATCH_PAUSE).await;
    }
}

/// A watched event as the follower takes it; `None` for keys sextant does not read, and for
/// records it cannot (logged).
fn logged(keys: &Keys, event: EventType, kv: &KeyValue) -> Option<Logged> {
    let (kind, name) = keys.kind(kv.key())?;
    let put = event == EventType::Put;
    Some(match kind {
        Kind::Instance if put => match keys.decode(kv) {
            Ok(instance) => Logged::Instance(name.to_owned(), Some(Box::new(instance))),
            Err(error) => {
                tracing::error!(%error, "an instance record in etcd cannot be read: skipped");
                return None;
            }
        },
        Kind::Instance => Logged::Instance(name.to_owned(), None),
        Kind::Server => Logged::Server(name.to_owned(), put),
        Kind::Heartbeat => Logged::Heartbeat(name.to_owned(), if put { Keys::lease(kv) } else { None }),
        Kind::Kv if put => match keys.decode_kv(name, kv) {
            Ok(record) => Logged::Kv(name.to_owned(), Some(record)),
            Err(error) => {
                tracing::error!(%error, "a key/value entry in etcd cannot be read: skipped");
                return None;
            }
        },
        Kind::Kv => Logged::Kv(name.to_owned(), None),
        Kind::Node if put => match keys.decode_node(name, kv) {
            Ok(node) => Logged::Node(name.to_owned(), Some(Box::new(node))),
            Err(error) => {
                tracing::error!(%error, "a node record in etcd cannot be read: skipped");
                return None;
            }
        },
        Kind::Node => Logged::Node(name.to_owned(), None),
    })
}

/// Makes key/value changes as one transaction, if `condition` holds: the revision it was made
/// at, or `None` when the condition did not hold.
async fn write_kv(keys: &Keys, ops: Vec<KvOp>, condition: Option<KvCondition>) -> Result<Option<u64>, StoreError> {
    let ops: Vec<TxnOp> = ops
        .iter()
        .map(|op| match op {
            KvOp::Put(record) => TxnOp::put(keys.kv_key(&record.key), record.encode(), None),
            KvOp::Delete(key) => TxnOp::delete(keys.kv_key(key), None),
            KvOp::DeletePrefix(prefix) => TxnOp::delete(keys.kv_key(prefix), Some(DeleteOptions::new().with_prefix())),
        })
        .collect();
    let mut txn = Txn::new();
    if let Some(condition) = &condition {
        // A key that does not exist has a modify revision of 0, which `?cas=0` asks for.
        let index = i64::try_from(condition.index).unwrap_or(i64::MAX);
        txn = txn.when([Compare::mod_revision(
            keys.kv_key(&condition.key),
            CompareOp::Equal,
            index,
        )]);
    }
    let txn = txn.and_then(ops);
    let response = match condition {
        // A check-and-set is tried once: made again after an attempt that went through unseen,
        // it would fail on its own write and report as not made a write that was.
        Some(_) => match tokio::time::timeout(ATTEMPT_TIMEOUT, keys.client.clone().txn(txn)).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => return Err(keys.error(error.to_string())),
            Err(_) => return Err(keys.error(format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs()))),
        },
        None => {
            keys.retried(|mut client| {
                let txn = txn.clone();
                async move { client.txn(txn).await }
            })
            .await?
        }
    };
    // A transaction that changed nothing (a delete of what is not there) moves no revision:
    // the header's is then etcd's latest, perhaps another prefix's, which this server's watch
    // never brings. Nothing to wait for.
    let changed = response.op_responses().iter().any(|op| match op {
        etcd_client::TxnOpResponse::Delete(deleted) => deleted.deleted() > 0,
        _ => true,
    });
    let revision = match changed {
        true => response
            .header()
            .map_or(0, |h| u64::try_from(h.revision()).unwrap_or(0)),
        false => 0,
    };
    Ok(response.succeeded().then_some(revision))
}

/// Reads everything again and hands the follower what differs from its view.
async fn reload(
    keys: &Keys,
    follower: &dyn Follower,
    feed: &tokio::sync::mpsc::Sender<Feed>,
) -> Result<u64, StoreError> {
    let mut changed = Vec::new();
    let mut present = HashSet::new();
    let revision = keys
        .read_range("instances/", 0, |kv| {
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
    let mut cluster = keys.read_cluster(revision).await?;
    cluster.kv = Some(keys.read_kv(revision).await?);
    cluster.nodes = Some(keys.read_nodes(revision).await?.0);
    tracing::info!(
        revision,
        instances = present.len(),
        changed = changed.len(),
        servers = ?cluster.servers,
        "registry read again from etcd"
    );
    let _ = feed
        .send(Feed::Reloaded(revision, Some((changed, present)), cluster))
        .await;
    Ok(revision)
}

/// Every [`COMPACT_EVERY`], compacts etcd's history up to the revision it had one period
/// before, so that it holds at least one period of changes and not much more. Every server on
/// the prefix does it; compacting what is compacted already is refused, harmlessly.
async fn compact(keys: Keys) {
    let mut previous = None;
    loop {
        tokio::time::sleep(COMPACT_EVERY).await;
        let latest = keys
            .retried(|mut client| async move { client.get("/", Some(GetOptions::new().with_count_only())).await })
            .await;
        let Ok(latest) = latest else { continue };
        let latest = latest.header().map_or(0, |h| h.revision());
        if let Some(revision) = previous.replace(latest) {
            match keys.client.clone().compact(revision, None).await {
                Ok(_) => tracing::debug!(revision, "etcd history compacted"),
                Err(error) => tracing::debug!(%error, revision, "etcd history not compacted"),
            }
        }
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
        // A connection that stops answering (a partition: no reset, only silence) is given up
        // within seconds, so that the watch opens again on another member.
        .with_keep_alive(KEEPALIVE, KEEPALIVE);
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

/// Renews this server's lease every [`RENEW_EVERY`], telling the follower when etcd goes out of
/// reach and comes back; a lease that ran out meanwhile is replaced.
async fn keep_holding(keys: Keys, mut lease: i64, follower: Arc<OnceLock<Weak<dyn Follower>>>) {
    let mut reachable = true;
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let renewed = tokio::time::timeout(ATTEMPT_TIMEOUT, renew(keys.client.clone(), lease)).await;
        let now_reachable = match renewed {
            Ok(Ok(true)) => true,
            Ok(Ok(false)) => match keys.hold_key().await {
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
                tracing::info!(endpoints = %keys.endpoints, "etcd can be reached again: resynced");
            } else {
                tracing::warn!(endpoints = %keys.endpoints, "etcd cannot be reached: serving the last registry seen (stale)");
            }
        }
        if let Some(follower) = follower.get().and_then(Weak::upgrade) {
            follower.reachable(reachable);
        }
    }
}
