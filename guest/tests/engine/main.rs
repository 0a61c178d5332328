//! Native tests of the engine on real directories (std::fs storage, manual clock), by topic.

#[path = "../common/mod.rs"]
mod common;

mod eviction;
mod foreign;
mod listing;
mod operations;
mod read_only;
mod recovery;
