//! The `engine` binary: the engine's CLI with the built-in steps.

/// mimalloc instead of glibc's malloc: a run allocates thousands of small values (JSON,
/// template contexts, store keys), and glibc's allocator spent a fifth of the instructions
/// of an event on them, more under contention between the runtime's threads.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    no_transparent_huge_pages();
    // A fresh registry per `engine test` test: no step state leaks between tests.
    engine::cli::main_with_commands(
        caseflow::builtin_registry,
        caseflow::serve_hooks(),
        vec![caseflow::bench::command()],
    )
}

/// Transparent huge pages off for this process. mimalloc asks for huge pages on the memory
/// it commits (Linux's default THP mode, `madvise`, grants them), and a 2 MiB page that
/// holds a few live values is resident in full: `engine serve` on a store of 1M cases
/// peaked at 270 MB with them and 230 MB without, 190 MB and 150 MB once started, with no
/// difference in chains per second or CPU per chain (`engine bench`, docs/benchmarks.md).
/// Databases such as Redis and MongoDB ask for the same.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
