//! Compiles `agent.proto` and `tailnet.proto` with protox (no system protoc) into prost types plus the dRPC
//! service traits, routers and typed clients of `agentwire_transport::codegen`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["agent.proto", "tailnet.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    prost_build::Config::new()
        .out_dir(&out)
        .bytes(["."])
        .service_generator(Box::new(agentwire_transport::codegen::DrpcGenerator::new()))
        .compile_fds(descriptors)?;
    Ok(())
}
