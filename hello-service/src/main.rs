//! The `hello-service` binary: the demo on its own (the Docker image runs it).
//! Everything lives in the library; `switchyard demo` serves the same demo.

fn main() -> std::process::ExitCode {
    hello_service::run(std::env::args().skip(1))
}
