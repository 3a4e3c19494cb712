//! The integration tests, one binary (one link, one harness) with a module per area: each starts
//! the real server (in-process on port 0, or the real binary) and speaks real DNS over UDP and TCP
//! and real HTTP, with real peers (resolvers, Consul clients) where the area needs them.

mod common;

mod acl;
mod binary;
mod blocking;
mod bounds;
mod catalog;
mod cli;
mod client;
mod clients;
mod cluster;
mod consul_api;
mod dns;
mod dns_abuse;
mod durability;
mod encoding;
mod etcd;
mod flapping;
mod forwarding;
mod fuzz_corpus;
mod health;
mod kv;
mod metrics;
mod paused_clock;
mod reflection;
mod resolvers;
mod seed_client;
mod store_failures;
mod tls;
mod ui;
mod zones;
