//! Native tests of the engine on real directories (std::fs storage, manual clock), by topic;
//! `power_cut` runs it on a simulated disk instead, cutting the power at every mutation.

#[path = "../common/mod.rs"]
mod common;

mod background;
mod eviction;
mod foreign;
mod full_disk;
mod listing;
mod operations;
mod power_cut;
mod read_only;
mod recovery;
mod shared;
