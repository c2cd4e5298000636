use std::{env, error::Error, path::PathBuf};

const PROTOS: &[&str] = &[
    "proto/conduit/v1/users.proto",
    "proto/conduit/v1/auth.proto",
    "proto/conduit/v1/profiles.proto",
    "proto/conduit/v1/articles.proto",
    "proto/conduit/v1/comments.proto",
    "proto/conduit/v1/tags.proto",
    "proto/conduit/v1/errors.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    // protoc ships inside protoc-bin-vendored so a fresh machine needs no system install;
    // an explicit $PROTOC still wins (e.g. a distro build with its own protoc).
    if env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
        unsafe { env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    let well_known = protoc_bin_vendored::include_path()?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let protos: Vec<PathBuf> = PROTOS.iter().map(PathBuf::from).collect();

    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("conduit_descriptor.bin"))
        .build_client(true)
        // Clients (used by the tests) take a Channel built by the caller; the server
        // binary does not link tonic's client transport.
        .build_transport(false)
        .build_server(true)
        // The two article lists are one hand-written message that the server can also
        // write from encodings kept with the read model's pages (src/proto/articles_response.rs).
        .extern_path(
            ".conduit.v1.ListArticlesResponse",
            "crate::proto::ArticlesResponse",
        )
        .extern_path(
            ".conduit.v1.FeedArticlesResponse",
            "crate::proto::ArticlesResponse",
        )
        .compile_protos(&protos, &[PathBuf::from("proto"), well_known])?;

    // Build identity for the conduit_build_info metric; CONDUIT_GIT_SHA wins (release builds
    // from a tarball have no .git).
    let sha = env::var("CONDUIT_GIT_SHA").ok().or_else(|| {
        std::process::Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    });
    println!(
        "cargo:rustc-env=CONDUIT_GIT_SHA={}",
        sha.unwrap_or_else(|| "unknown".into())
    );
    println!("cargo:rerun-if-env-changed=CONDUIT_GIT_SHA");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    Ok(())
}
