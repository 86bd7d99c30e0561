//! Compiles `proto/*.proto` with protox (no system protoc) into prost types plus generated dRPC service code.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/agent.proto", "proto/tailnet.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    prost_build::Config::new()
        .out_dir(&out)
        .bytes(["."])
        .service_generator(Box::new(agentwire_transport::codegen::DrpcGenerator::new()))
        .compile_fds(descriptors)?;
    Ok(())
}
