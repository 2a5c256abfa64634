use std::process::ExitCode;

use clap::Parser;
use kess::config::{Cli, ClientArgs, Command, LogFormat};
use kess::daemon::BoxError;
use kess::proto::admin_service_client::AdminServiceClient;
use kess::proto::{GetShuffleStateRequest, RemoveApplicationRequest};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = match &cli.command {
        Command::Daemon(c) => c.log_format,
        Command::Controller(c) => c.log_format,
        _ => LogFormat::Text,
    };
    init_logging(log_format);
    if matches!(cli.command, Command::Daemon(_)) {
        kess::memory::limit_arenas();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kess: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "kess failed");
            eprintln!("kess: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), BoxError> {
    match command {
        Command::Daemon(config) => {
            let metrics = kess::metrics::install()?;
            kess::daemon::start(*config, metrics)
                .await?
                .run_until_signal()
                .await
        }
        Command::State(args) => {
            let mut client = connect(&args.client).await?;
            let state = client
                .get_shuffle_state(GetShuffleStateRequest {
                    app_id: args.app.unwrap_or_default(),
                })
                .await?
                .into_inner();
            println!("{}", serde_json::to_string_pretty(&state)?);
            Ok(())
        }
        Command::RemoveApp(args) => {
            let mut client = connect(&args.client).await?;
            let report = client
                .remove_application(RemoveApplicationRequest { app_id: args.app })
                .await?
                .into_inner();
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Bench(args) => kess::bench::run(args).await,
        Command::BenchEss(args) => kess::bench::ess::run(args).await,
        Command::Controller(args) => {
            let metrics = kess::metrics::install()?;
            kess::controller::run::run(*args, metrics).await
        }
        Command::Crd => {
            print!("{}", kess::controller::crd::crd_yaml()?);
            Ok(())
        }
    }
}

async fn connect(
    args: &ClientArgs,
) -> Result<AdminServiceClient<tonic::transport::Channel>, BoxError> {
    Ok(AdminServiceClient::connect(args.server.clone()).await?)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KESS_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
