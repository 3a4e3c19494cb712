//! sextant: DNS-based service discovery.
//!
//! Services register over a Consul-compatible HTTP API ([`api`]); the [`registry`] keeps every
//! instance and, on each change, recompiles that service's DNS answers; the DNS server ([`dns`])
//! answers `<service>.service.<domain>` from those compiled answers and everything else from the
//! zone files. Data flows one way: HTTP writes the registry, DNS reads it. [`app`] wires the
//! pieces; [`config`] holds the settings; [`model`] the validated types they share.

pub mod api;
pub mod app;
pub mod config;
pub mod dns;
pub mod model;
pub mod registry;

pub use app::App;
pub use config::Config;
