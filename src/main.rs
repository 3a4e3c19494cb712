//! The `sextant` binary: command line → config → logging → serve until SIGINT or SIGTERM
//! (SIGHUP reloads the zone files).

use std::io::IsTerminal;

use clap::Parser;
use sextant::App;
use sextant::config::{Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() {
    let command = parse_command_line().command;
    let format = match &command {
        Command::Serve(args) => args.log_format,
        Command::Client(_) => LogFormat::Text,
    };
    init_logs(format);
    match command {
        Command::Serve(args) => {
            if let Err(error) = serve(*args).await {
                eprintln!("error: {error}");
                std::process::exit(1);
            }
        }
        Command::Client(command) => {
            if let Err(error) = sextant::cli::run(command).await {
                eprintln!("error: {error}");
                std::process::exit(sextant::cli::exit_code(&error));
            }
        }
    }
}

/// Logs go to stderr, so they can be piped and parsed: text, coloured only on a terminal, or one
/// JSON object per line (`--log-format json`) for a log shipper.
fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs.json().flatten_event(true).init(),
        LogFormat::Text => logs
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .init(),
    }
}

/// The command line, or clap's error and exit; server flags given without `serve` get a hint.
fn parse_command_line() -> Cli {
    use clap::error::ErrorKind;
    Cli::try_parse().unwrap_or_else(|error| {
        let first = std::env::args().nth(1).unwrap_or_default();
        if matches!(error.kind(), ErrorKind::UnknownArgument | ErrorKind::InvalidSubcommand) && first.starts_with("--")
        {
            let _ = error.print();
            eprintln!("\nhint: the server's flags follow the `serve` command: sextant serve {first} …");
            std::process::exit(2);
        }
        error.exit()
    })
}

async fn serve(args: sextant::config::ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let config = args.into_config()?;
    raise_open_files_limit();
    // Before the server says it is serving: a SIGTERM right after must stop it cleanly.
    let signals = Signals::new()?;
    let app = App::bind(config).await?;
    signals.serve_until_stopped(&app).await?;
    tracing::info!("shutting down");
    app.shutdown().await;
    Ok(())
}

struct Signals {
    interrupt: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Runs until SIGINT or SIGTERM; SIGHUP reloads the zone files and the HTTP API's TLS
    /// certificate.
    async fn serve_until_stopped(mut self, app: &App) -> std::io::Result<()> {
        loop {
            tokio::select! {
                _ = self.interrupt.recv() => return Ok(()),
                _ = self.term.recv() => return Ok(()),
                _ = self.hangup.recv() => {
                    match app.reload_zones() {
                        Ok(files) => tracing::info!(?files, "zones reloaded"),
                        Err(error) => tracing::error!(%error, "zones not reloaded; still serving the previous ones"),
                    }
                    match app.reload_tls() {
                        Ok(true) => tracing::info!("HTTP TLS certificate reloaded"),
                        Ok(false) => {}
                        Err(error) => {
                            tracing::error!(%error, "HTTP TLS certificate not reloaded; still serving the previous one")
                        }
                    }
                }
            }
        }
    }
}

/// Every watcher (blocking query) holds a connection, so thousands of them need as many file
/// descriptors; Debian's default soft limit is 1,024. Raise it to the hard limit, as Go's runtime
/// does for Consul.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open files limit"),
    }
}
