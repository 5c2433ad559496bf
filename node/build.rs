//! Compiles the gRPC protocol with the protoc shipped by `protoc-bin-vendored`,
//! so a build needs no system package.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure().compile_protos(
        &[
            "proto/raft.proto",
            "proto/scheduler.proto",
            "proto/sidecar.proto",
        ],
        &["proto"],
    )?;
    Ok(())
}
