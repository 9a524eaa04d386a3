//! The `labelq` binary; see `labelq --help`.

fn main() -> std::process::ExitCode {
    labelq::cli::main()
}
