//! Build script of every Lambda crate (request-handler, worker, status-api, and the hello-world
//! baseline of the init benchmark): links the function's executable at a fixed address (non-PIE).
//!
//! A position-independent executable is relocated by the dynamic loader at every start. A function
//! built on the AWS SDK carries some 38,000 relative relocations into 1.2 MB of otherwise
//! read-only data, and every page they touch is copied on first write: about 0.6 ms of each cold
//! start of our functions on the benchmark machine (0.1 ms of hello-world's), measured by building
//! them both ways (BENCHMARKS.md). At a fixed address the linker resolves them once and the pages
//! map straight from the file.
//!
//! The price is address-space randomisation of the executable's own code and data (the stack,
//! heap and shared libraries stay randomised). `LABELQ_LAMBDA_PIE=1` at build time keeps the
//! toolchain's default, position-independent executable.

fn main() {
    println!("cargo::rerun-if-env-changed=LABELQ_LAMBDA_PIE");
    let pie = std::env::var_os("LABELQ_LAMBDA_PIE").is_some_and(|v| v == "1");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if linux && !pie {
        println!("cargo::rustc-link-arg-bins=-no-pie");
    }
}
