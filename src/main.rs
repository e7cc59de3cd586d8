//! The `engine` binary: the engine's CLI with the built-in steps.

fn main() -> std::process::ExitCode {
    // A fresh registry per `engine test` test: no step state leaks between tests.
    engine::cli::main_with_commands(
        caseflow::builtin_registry,
        caseflow::serve_hooks(),
        vec![caseflow::bench::command()],
    )
}
