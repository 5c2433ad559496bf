/// jemalloc rather than glibc's malloc: at an instant with 1,000 HTTP fires
/// the leader spent about a fifth of its CPU in malloc and free (`_int_free`,
/// arena lock futexes; perf), between the instant and the request.
/// BENCHMARKS.md has the paired A/B that chose it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its first allocation (a weak symbol in
/// jemalloc, defined here; `_RJEM_MALLOC_CONF` in the environment still
/// overrides it). A snapshot is built and read as tens of MB of transient
/// buffers (50 MB at 100,000 schedules); by default jemalloc keeps freed
/// pages for 10 s and purges them only when it allocates again, so a node's
/// resident size stayed at its snapshot peak (323 against 286 MiB with
/// immediate purging, `raftcron-bench scale`). A background thread returns
/// them within about a second, off the workers that fire.
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
static _rjem_malloc_conf: &[u8; 85] =
    b"background_thread:true,max_background_threads:1,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> std::process::ExitCode {
    raftcron_node::cli::node_main()
}
