fn main() -> std::process::ExitCode {
    raftcron_node::cli::node_main()
}
