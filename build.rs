//! Compiles `proto/` with protox (pure Rust, no `protoc` needed) and generates
//! prost messages (and, for the replica service, tonic stubs).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/io/prometheus/client/metrics.proto",
        "proto/pushgate/v1/log.proto",
        "proto/pushgate/v1/replica.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
