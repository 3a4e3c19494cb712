//! sextant: DNS-based service discovery.
//!
//! Services register over a Consul-compatible HTTP API ([`api`]); the [`registry`] keeps every
//! instance and, on each change, recompiles that service's DNS answers; the DNS server ([`dns`])
//! answers `<service>.service.<domain>` from those compiled answers and everything else from the
//! zone files. The [`health`] checker runs every registered check and writes the results back
//! through the registry. Data flows one way: HTTP and health checks write the registry, DNS reads
//! it; the registry makes every change durable through [`store`] before it is acknowledged, and is
//! rebuilt from it at start. [`app`] wires the pieces; [`config`] holds the settings; [`model`] the validated types they share.
//! [`client`] is the other side: what a service uses to register itself and find others.

mod alloc;
pub mod api;
pub mod app;
pub mod cli;
pub mod client;
pub mod config;
pub mod dns;
pub mod health;
pub mod history;
mod log_throttle;
pub mod metrics;
pub mod model;
pub mod net;
pub mod registry;
pub mod store;

pub use app::App;
pub use config::Config;
