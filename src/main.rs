use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use podtun::cli::Cli;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Settings the command line left open come from the config file.
    let cli = match podtun::config::apply(cli, &matches) {
        Ok(cli) => cli,
        Err(err) => {
            eprint!("{}", podtun::error::render(&err));
            return ExitCode::from(podtun::error::exit_code(&err));
        }
    };
    podtun::init_tracing(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The signal handlers go in before anything starts, so that a SIGTERM at any moment stops
    // podtun cleanly.
    let result = runtime.block_on(async {
        let shutdown = podtun::shutdown_signal();
        podtun::run(cli, shutdown).await
    });
    // A task stuck on a dead network must not delay the exit.
    runtime.shutdown_background();
    // Stopped while a password was being typed: echo comes back on.
    podtun::laptop::restore_terminal();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::trace!("{err:?}");
            eprint!("{}", podtun::error::render(&err));
            ExitCode::from(podtun::error::exit_code(&err))
        }
    }
}
