//! The `ssecast` binary: flags and environment, logger, exit codes.
//!
//! Exit codes: 0 after a clean shutdown, 1 when the server cannot start or
//! fails, 2 for a bad configuration.

use std::process::ExitCode;

use simplelog::{ColorChoice, ConfigBuilder, TermLogger, TerminalMode};
use ssecast::{Config, ConfigError, Server};

fn main() -> ExitCode {
    return_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match Config::from_env_and_args(&args, |k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(ConfigError::Help) => {
            print!("{}", Config::help());
            return ExitCode::SUCCESS;
        }
        Err(ConfigError::CheckConfig(c)) => {
            println!("configuration ok: bind={} {}", c.bind, c.summary());
            return ExitCode::SUCCESS;
        }
        Err(ConfigError::Version) => {
            println!("ssecast {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("ssecast: {e}");
            return ExitCode::from(2);
        }
    };
    let log_cfg = ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_target_level(log::LevelFilter::Off)
        .set_thread_level(log::LevelFilter::Off)
        .build();
    let _ = TermLogger::init(
        cfg.log_level,
        log_cfg,
        TerminalMode::Stderr,
        ColorChoice::Never,
    );

    let summary = cfg.summary();
    let mut server = match Server::new(cfg) {
        Ok(s) => s,
        Err(e) => {
            // A bind error names its address (and, when the port is taken,
            // what sharing one needs): `listener::listen`.
            log::error!("cannot start: {e}");
            eprintln!("ssecast: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = server.handle_signals() {
        eprintln!("ssecast: cannot install signal handlers: {e}");
        return ExitCode::from(1);
    }
    log::info!(
        "ssecast {} listening on {} ({}; effective max_connections={})",
        env!("CARGO_PKG_VERSION"),
        server.local_addr(),
        summary,
        server.max_connections()
    );
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("event loop failed: {e}");
            ExitCode::from(1)
        }
    }
}

/// Channel rings are large allocations that grow, shrink and are freed as
/// channels come and go. glibc's dynamic mmap threshold rises to the size of
/// every large block freed, after which rings are carved from the heap and
/// freed rings are not given back: measured, RSS reached twice
/// `--history-memory` (`scripts/faults/churn_channels.sh`, docs/faults.md
/// finding 6) while the history itself stayed under it. A fixed threshold
/// keeps blocks of 128 KiB and more in their own mappings, returned to the
/// kernel when freed.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
