#![recursion_limit = "256"]
//! paddock's integration tests, one binary (the zero2prod layout): every module
//! starts its own nats-server per test and talks to it over the wire.

mod support;

mod archive;
mod bad_input;
mod bench;
mod broker;
mod browser;
mod budgets;
mod cluster;
mod commands;
mod contract;
mod docs;
mod durability;
mod field;
mod gateway;
mod gateway_bounds;
mod ingest;
mod isolation;
mod laps;
mod leaf;
mod lifecycle;
mod links;
mod live;
mod memory;
mod ops;
mod partitions;
mod processors;
mod race;
mod readme;
mod schema;
mod security;
mod sims;
mod sims_forza_gt7;
mod team_flags;
mod teams;
mod traces;
