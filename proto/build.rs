//! Compiles `proto/*.proto` with a vendored `protoc`, so no system package is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let include = protoc_bin_vendored::include_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    let files = [
        "proto/switchyard/v1/envelope.proto",
        "proto/switchyard/v1/account_link.proto",
        "proto/switchyard/v1/seen.proto",
        "proto/switchyard/v1/driver_status.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    config.compile_protos(&files, &["proto".into(), include])?;
    Ok(())
}
