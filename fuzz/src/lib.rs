//! The checks the fuzz targets run, one module per crate under test. The
//! same files are compiled into `crds/tests/fuzz_regressions.rs` and
//! `node/tests/fuzz_regressions.rs` with `#[path]`, which replay the seed
//! corpora and every committed regression input under `cargo test`.

pub mod crds_checks;
pub mod node_checks;
