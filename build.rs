// Gives the shared library a SONAME that follows the C ABI version (ADAMW_ABI_VERSION), so an
// installed libadamw.so.1 is replaced only by ABI-compatible builds. With the `host-kernels`
// feature, compiles the device kernels for the host (tests): IEEE operations as written, none
// contracted into a fused multiply-add.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libadamw.so.1");
    }
    #[cfg(feature = "host-kernels")]
    host_kernels();
}

#[cfg(feature = "host-kernels")]
fn host_kernels() {
    for file in ["kernels.cu", "host_shim.h", "host_launch.cpp"] {
        println!("cargo:rerun-if-changed=src/engine/device/{file}");
    }
    cc::Build::new()
        .cpp(true)
        .file("src/engine/device/host_launch.cpp")
        .flag("-std=c++17")
        .flag("-ffp-contract=off")
        .flag("-fno-fast-math")
        .flag("-fno-exceptions")
        .flag("-fno-rtti")
        // The kernels read float arrays as float4, as CUDA code does.
        .flag("-fno-strict-aliasing")
        // Nothing of the C++ library is used: C programs link libadamw.a as before.
        .cpp_link_stdlib(None)
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .opt_level(2)
        .compile("adamw_host_kernels");
}
