//! Compiles `proto/mentorship/v1` with protox (no system protoc), writes the
//! descriptor set for gRPC reflection, and generates the tonic services.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/mentorship/v1/errors.proto",
        "proto/mentorship/v1/resources.proto",
        "proto/mentorship/v1/directory_service.proto",
        "proto/mentorship/v1/booking_service.proto",
        "proto/mentorship/v1/session_service.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={file}");
    }
    let fds = protox::compile(files, ["proto"])?;

    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out.join("mentorship_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;

    tonic_prost_build::configure()
        // Services not built yet answer UNIMPLEMENTED instead of needing a hand-written stub.
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    Ok(())
}
