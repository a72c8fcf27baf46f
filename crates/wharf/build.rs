//! Links the functions a sidecar runs next to each other.
//!
//! Why: the kernel maps a binary's code 64 KiB at a time around each page it faults in, so
//! the 1.5 MB of code an idle sidecar runs, spread by the linker over 123 such blocks of a
//! 14 MB `.text`, kept 8.9 MiB of it resident in every standalone `wharf sidecar`
//! (`docs/benchmarks.md`, "Mesh"). `link/sidecar.order` lists those functions (the ones it
//! runs idle, then the ones its request path adds), by their mangled names, for lld's
//! `--symbol-ordering-file` (rustc links with its own lld on x86_64 Linux);
//! `bench/symbol_order.sh` writes it from a callgrind run of a sidecar pair. Names that are
//! gone after the code or a dependency changes are skipped silently, so a stale list costs
//! memory, never a build. Release builds only: tests link without it.

fn main() {
    let order = concat!(env!("CARGO_MANIFEST_DIR"), "/link/sidecar.order");
    println!("cargo:rerun-if-changed={order}");
    let release = std::env::var("PROFILE").is_ok_and(|profile| profile == "release");
    let lld_target = std::env::var("TARGET").is_ok_and(|t| t == "x86_64-unknown-linux-gnu");
    if release && lld_target {
        // `-Xlinker`, one argument each: `-Wl,` would split a checkout path with a comma.
        for arg in ["--symbol-ordering-file", order, "--no-warn-symbol-ordering"] {
            println!("cargo:rustc-link-arg-bin=wharf=-Xlinker");
            println!("cargo:rustc-link-arg-bin=wharf={arg}");
        }
    }
}
