//! A live view of one service's healthy instances: a background task follows sextant (blocking
//! queries, or SRV lookups in `dns_view.rs`) and publishes each new list; readers take the
//! latest list without waiting, and the task ends when the last reader is gone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::balance::{Balancer, Strategy};
use super::{Client, Error, Result};

/// One instance of a service, as the view last read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Its ID (for the DNS view: `target:port`).
    pub id: String,
    pub service: String,
    /// Its IP address or host name.
    pub address: String,
    pub port: u16,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    /// Its weight (Consul's `Weights.Passing`, or the SRV weight); 1 when none was given.
    pub weight: u32,
}

impl Instance {
    /// `address:port`, with an IPv6 address in brackets: what a URL or a connect call takes.
    pub fn socket_addr(&self) -> String {
        if self.address.contains(':') {
            format!("[{}]:{}", self.address, self.port)
        } else {
            format!("{}:{}", self.address, self.port)
        }
    }
}

/// What the view knows about the service as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewState {
    /// Nothing read yet.
    NotYetRead,
    /// The service is registered (its healthy instances may still be none).
    Known,
    /// No instance of the service is registered.
    Unknown,
}

/// A service's healthy instances as read at one moment; a new one is published on each change.
#[derive(Debug)]
pub struct Instances {
    service: String,
    instances: Vec<Arc<Instance>>,
    state: ViewState,
    index: u64,
    generation: u64,
    read_at: Instant,
    failing: Option<String>,
}

impl Instances {
    pub(crate) fn read(service: &str, mut list: Vec<Instance>, index: u64, known: bool) -> Self {
        list.sort_by(|a, b| a.id.cmp(&b.id));
        Self {
            service: service.to_string(),
            instances: list.into_iter().map(Arc::new).collect(),
            state: if known { ViewState::Known } else { ViewState::Unknown },
            index,
            generation: 0,
            read_at: Instant::now(),
            failing: None,
        }
    }

    fn not_yet_read(service: &str) -> Self {
        let mut empty = Self::read(service, Vec::new(), 0, false);
        empty.state = ViewState::NotYetRead;
        empty
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// The healthy instances, sorted by ID.
    pub fn instances(&self) -> &[Arc<Instance>] {
        &self.instances
    }

    pub fn state(&self) -> ViewState {
        self.state
    }

    /// The `X-Consul-Index` of the read that brought this list (0 for the DNS view).
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Counts the lists the view has published; a balancer compares it to see a change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// When the read that brought this list happened (later reads that found the same list do
    /// not publish a new one).
    pub fn read_at(&self) -> Instant {
        self.read_at
    }

    /// Why the latest read failed, when it did: the list is then the last one read (stale).
    pub fn failing(&self) -> Option<&str> {
        self.failing.as_deref()
    }

    /// The error a pick from an empty list gives: what the view knows about why it is empty.
    pub fn empty_error(&self) -> Error {
        let service = self.service.clone();
        match self.state {
            ViewState::Known => Error::NoHealthyInstance { service },
            ViewState::Unknown => Error::ServiceUnknown { service },
            ViewState::NotYetRead => Error::NotYetRead {
                service,
                last_error: self.failing.clone(),
            },
        }
    }

    fn same_as(&self, other: &Instances) -> bool {
        self.state == other.state && self.instances == other.instances
    }
}

/// A live view of one service's healthy instances. Clones share one follower task, which
/// stops when the last clone and the last [`Balancer`] built on it are dropped.
#[derive(Clone)]
pub struct ServiceView {
    latest: watch::Receiver<Arc<Instances>>,
}

impl ServiceView {
    /// A view kept current by blocking queries on `/v1/health/service/<name>?passing`.
    pub(crate) fn http(client: Client, service: &str) -> Self {
        let (publisher, view) = Publisher::new(service);
        tokio::spawn(follow_http(client, publisher));
        view
    }

    /// A view of a fixed list that never changes: static configuration, or a test of code that
    /// takes a view. Nothing follows it, so [`changed`](Self::changed) fails at once with
    /// [`Error::ViewStopped`].
    pub fn fixed(service: &str, instances: Vec<Instance>) -> Self {
        let (mut publisher, view) = Publisher::new(service);
        publisher.publish(Instances::read(service, instances, 0, true));
        view
    }

    /// The list as last read: no waiting, no I/O.
    pub fn current(&self) -> Arc<Instances> {
        self.latest.borrow().clone()
    }

    /// Waits for the first successful read; if a read fails before one succeeds, its error (the
    /// view keeps trying: the next call waits for the next read).
    pub async fn ready(&mut self) -> Result<Arc<Instances>> {
        let mut waited = false;
        loop {
            let now = self.latest.borrow_and_update().clone();
            if now.state != ViewState::NotYetRead {
                return Ok(now);
            }
            if waited && now.failing.is_some() {
                return Err(now.empty_error());
            }
            self.latest.changed().await.map_err(|_| self.stopped())?;
            waited = true;
        }
    }

    /// Waits for the next list published: a change of instances, or a read failing or recovering
    /// ([`Instances::failing`]).
    pub async fn changed(&mut self) -> Result<Arc<Instances>> {
        self.latest.changed().await.map_err(|_| self.stopped())?;
        Ok(self.latest.borrow_and_update().clone())
    }

    fn stopped(&self) -> Error {
        Error::ViewStopped {
            service: self.latest.borrow().service.clone(),
        }
    }

    /// A balancer over this view.
    pub fn balancer(&self, strategy: Strategy) -> Balancer {
        Balancer::new(self.latest.clone(), strategy)
    }
}

/// The follower's side of a view: publishes a list only when it differs from the last one.
pub(crate) struct Publisher {
    sender: watch::Sender<Arc<Instances>>,
    generation: u64,
}

impl Publisher {
    pub(crate) fn new(service: &str) -> (Self, ServiceView) {
        let (sender, latest) = watch::channel(Arc::new(Instances::not_yet_read(service)));
        (Self { sender, generation: 0 }, ServiceView { latest })
    }

    pub(crate) fn service(&self) -> String {
        self.sender.borrow().service.clone()
    }

    pub(crate) fn publish(&mut self, mut read: Instances) {
        let unchanged = self.sender.borrow().same_as(&read);
        if unchanged && self.sender.borrow().failing.is_none() {
            return;
        }
        // The same instances after a failure: a new snapshot (not failing) but no new generation,
        // so balancers keep their state.
        self.generation += u64::from(!unchanged);
        read.generation = self.generation;
        self.sender.send_replace(Arc::new(read));
    }

    /// Keeps the last list, marked as failing with `error`.
    pub(crate) fn failed(&mut self, error: &Error) {
        let last = self.sender.borrow().clone();
        let failing = Instances {
            service: last.service.clone(),
            instances: last.instances.clone(),
            failing: Some(error.to_string()),
            ..*last
        };
        self.sender.send_replace(Arc::new(failing));
    }

    /// Resolves when every reader is gone.
    pub(crate) async fn unwatched(&self) {
        self.sender.closed().await
    }
}

/// A read that brings no change sooner than this is a server that does not block (a proxy, or
/// an index it does not know): the follower waits this long before the next, as Consul advises.
const MIN_QUIET_READ: Duration = Duration::from_secs(1);

/// Follows a service with blocking queries, handling the index as Consul documents: start at 0,
/// block on the last index, read afresh if the index goes backwards, never block on 0, spread the
/// waits, back off on errors. After an error it also reads afresh before blocking again: the
/// server may have restarted with a lower index, and a query at the old one would sit out the
/// whole wait before the index could be seen to go backwards.
async fn follow_http(client: Client, mut publisher: Publisher) {
    let service = publisher.service();
    let (mut index, mut failures) = (0u64, 0u32);
    loop {
        let wait = client.inner.wait.mul_f64(rand::random_range(0.9..=1.0));
        let started = Instant::now();
        let read = async {
            let (list, new_index) = client
                .read_passing(&service, (index > 0).then_some((index, wait)))
                .await?;
            let known = !list.is_empty() || client.is_registered(&service).await?;
            Ok::<_, Error>((list, new_index, known))
        };
        let read = tokio::select! {
            read = read => read,
            () = publisher.unwatched() => return,
        };
        let pause = match read {
            Ok((list, new_index, known)) => {
                failures = 0;
                publisher.publish(Instances::read(&service, list, new_index, known));
                let quiet = new_index == index && started.elapsed() < wait / 2;
                index = if new_index < index { 0 } else { new_index.max(1) };
                quiet.then_some(MIN_QUIET_READ)
            }
            Err(error) => {
                tracing::warn!(%service, %error, "reading the service's instances failed; keeping the last list");
                publisher.failed(&error);
                failures = failures.saturating_add(1);
                index = 0;
                Some(client.inner.retry.backoff(failures))
            }
        };
        if let Some(pause) = pause {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = publisher.unwatched() => return,
            }
        }
    }
}
