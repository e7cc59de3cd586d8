//! The `engine` binary: the engine's CLI with the built-in steps.

fn main() -> std::process::ExitCode {
    engine::cli::main_with(caseflow::builtin_registry(), caseflow::serve_hooks())
}
