use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    raftcron_operator::run(raftcron_operator::Args::parse()).await
}
