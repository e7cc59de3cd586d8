//! The `engine` binary: the engine's CLI with the built-in steps.

/// mimalloc instead of glibc's malloc: a run allocates thousands of small values (JSON,
/// template contexts, store keys), and glibc's allocator spent a fifth of the instructions
/// of an event on them, more under contention between the runtime's threads.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // A fresh registry per `engine test` test: no step state leaks between tests.
    engine::cli::main_with_commands(
        caseflow::builtin_registry,
        caseflow::serve_hooks(),
        vec![caseflow::bench::command()],
    )
}
