//! raftcron-crds: the shared vocabulary of raftcron.
//!
//! ```text
//!  YAML (kubectl / raftcron-node local) ──► types::ScheduledJob ──► validate ──► schedule::Schedule
//!                                              │                                     │
//!                                              ▼                                     ▼
//!                                      crdgen (CRD YAML)                 next fire instants (ms, UTC)
//! ```
//!
//! Types ([`types`]), validation ([`validate`]), the schedule grammar
//! ([`schedule`]), shared names: condition reasons, label keys, headers, run
//! ids ([`names`]), the bounds the schema and validation share
//! ([`limits`]), and YAML parsing for `raftcron-node local` and
//! `raftcronctl apply -f` ([`yaml`]). No IO: the node reads the files and
//! hands their text to [`yaml::parse_located`]. Node and operator both
//! build on it.

pub mod limits;
pub mod names;
pub mod schedule;
pub mod types;
pub mod validate;
pub mod yaml;

pub use types::*;
