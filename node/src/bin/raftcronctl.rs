fn main() -> std::process::ExitCode {
    raftcron_node::cli::ctl_main()
}
