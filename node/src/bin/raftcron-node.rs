/// jemalloc rather than glibc's malloc: at an instant with 1,000 HTTP fires
/// the leader spent about a fifth of its CPU in malloc and free (`_int_free`,
/// arena lock futexes; perf), between the instant and the request.
/// BENCHMARKS.md has the paired A/B that chose it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    raftcron_node::cli::node_main()
}
