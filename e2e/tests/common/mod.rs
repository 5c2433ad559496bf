//! Helpers shared by the e2e tests that need them (`mod common;`).

pub mod certs;
