//! The `engine` binary: the engine's CLI with the built-in steps.

fn main() -> std::process::ExitCode {
    engine::cli::main(caseflow::builtin_registry())
}
