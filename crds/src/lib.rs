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
//! ids ([`names`]), and YAML loading for `raftcron-node local` and
//! `raftcronctl apply -f` ([`yaml`]). No IO, except [`yaml::load_path`]
//! reading the files it is given: node and operator both build on it.

pub mod names;
pub mod schedule;
pub mod types;
pub mod validate;
pub mod yaml;

pub use types::*;
