//! The `imstatus` binary: parse arguments, run the command, exit with its code.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    let matches = imstatus::Cli::command()
        .after_help(imstatus::sources::help())
        .get_matches();
    let cli = match imstatus::Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    imstatus::init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("imstatus: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let factories = imstatus::sources::factories();
    let code = runtime.block_on(async {
        let mut out = std::io::stdout();
        let mut err = std::io::stderr();
        imstatus::run(cli, &factories, &mut out, &mut err, imstatus::stop_signal()).await
    });
    // Sources may hold blocking work; don't wait for it on the way out.
    runtime.shutdown_background();
    ExitCode::from(code)
}
