//! Compiles `proto/` with protox, a pure-Rust protobuf compiler, so building kess needs no
//! `protoc` on the machine. The descriptor set is kept for gRPC server reflection.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/kess/v1/kess.proto"];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("kess_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .bytes(".")
        // FetchedChunk's data is read from disk straight into the encode buffer (src/grpc/chunk.rs).
        .extern_path(".kess.v1.FetchedChunk", "crate::grpc::FetchedChunk")
        .codec_path("crate::grpc::codec::KessCodec")
        // Lets `kess state` print the daemon's answer as JSON.
        .type_attribute(".", "#[derive(serde::Serialize)]")
        .compile_fds(fds)?;
    Ok(())
}
