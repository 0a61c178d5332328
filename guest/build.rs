//! Tells the crates that embed this one's component where its sources are: the `links`
//! metadata below reaches their build scripts as `DEP_PCACHE_GUEST_DIR`, whether this package
//! is a workspace member or was unpacked from a registry.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo::metadata=dir={dir}");
    println!("cargo::rerun-if-changed=build.rs");
}
