// Gives the shared library a SONAME that follows the C ABI version (ADAMW_ABI_VERSION), so an
// installed libadamw.so.1 is replaced only by ABI-compatible builds.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libadamw.so.1");
    }
}
