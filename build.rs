//! Generates the etcd-compatible gRPC types from `proto/` with a vendored protoc, so a fresh
//! machine needs nothing but the Rust toolchain.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto");
    tonic_build::configure().compile_protos(&["proto/rpc.proto", "proto/kv.proto"], &["proto"])?;
    Ok(())
}
