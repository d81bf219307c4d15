//! Compiles `proto/mentorship/v1` with protox (no system protoc), writes the
//! descriptor set for gRPC reflection and the HTTP edge, generates the tonic services, and
//! generates one `pb::Rpc` impl per unary method (request type → response
//! type and path), so any RPC can be called by its request alone.

use std::{env, path::PathBuf};

/// Vendored from googleapis: the error details and `google.rpc.Status`, so
/// the HTTP edge can write an error's details as JSON by their type, and
/// `google.api.field_behavior`, which marks the fields a request requires.
const VENDORED: [&str; 3] = [
    "proto/google/rpc/status.proto",
    "proto/google/rpc/error_details.proto",
    "proto/google/api/field_behavior.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/mentorship/v1/errors.proto",
        "proto/mentorship/v1/resources.proto",
        "proto/mentorship/v1/directory_service.proto",
        "proto/mentorship/v1/booking_service.proto",
        "proto/mentorship/v1/session_service.proto",
        "proto/mentorship/v1/webhook_service.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={file}");
    }
    // `sqlx::migrate!` embeds migrations/ when the crate compiles: a new
    // migration alone must recompile it (as sqlx's docs advise).
    println!("cargo:rerun-if-changed=migrations");
    for vendored in VENDORED {
        println!("cargo:rerun-if-changed={vendored}");
    }
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true);
    compiler.open_files(files.iter().chain(&VENDORED))?;
    let fds = compiler.file_descriptor_set();

    let out = PathBuf::from(env::var("OUT_DIR")?);
    // Encoded by protox itself, which keeps the options' extensions (the
    // `google.api.http` routes) that prost's own types would drop.
    std::fs::write(
        out.join("mentorship_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    std::fs::write(out.join("mentorship_rpcs.rs"), rpc_impls(&fds))?;

    tonic_prost_build::configure()
        // No default stubs: a handler forgotten is a compile error, never a
        // silent UNIMPLEMENTED.
        .generate_default_stubs(false)
        // prost's codec with a small first encode buffer (src/grpc/codec.rs).
        .codec_path("crate::grpc::codec::SmallBufferCodec")
        .compile_fds(fds)?;
    Ok(())
}

/// `impl Rpc for <Request> { type Response = …; const PATH: &str = …; }` for
/// every unary method of `mentorship.v1`.
fn rpc_impls(fds: &prost_types::FileDescriptorSet) -> String {
    let mut out = String::new();
    for file in &fds.file {
        let package = file.package();
        for service in &file.service {
            for method in &service.method {
                if method.client_streaming() || method.server_streaming() {
                    continue;
                }
                let rust_type = |full: &str| full.rsplit('.').next().unwrap_or(full).to_owned();
                out.push_str(&format!(
                    "impl Rpc for {} {{ type Response = {}; const PATH: &'static str = \"/{}.{}/{}\"; }}\n",
                    rust_type(method.input_type()),
                    rust_type(method.output_type()),
                    package,
                    service.name(),
                    method.name(),
                ));
            }
        }
    }
    out
}
