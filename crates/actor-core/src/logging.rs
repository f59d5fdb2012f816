//! Log set-up for actor processes.
//!
//! A child process prints its `tracing` events to the stderr it shares with its parent;
//! every event inside an actor carries the `actor` span with the actor's tree path, so
//! interleaved lines from a whole tree say where they come from.

use tracing_subscriber::EnvFilter;

/// Environment variable that sets the log filter of a tree (`BROOD_LOG=debug`); the
/// root reads it and passes it down in the runtime vars.
pub const LOG_ENV: &str = "BROOD_LOG";

/// The filter a new root uses: `BROOD_LOG`, else `warn`.
pub fn default_level() -> String {
    std::env::var(LOG_ENV).unwrap_or_else(|_| "warn".to_owned())
}

/// Install a stderr formatter with `level` as filter for this process, unless the
/// program installed a subscriber already. Returns whether this call installed one.
///
/// An invalid directive falls back to `warn` (and says so) rather than failing the
/// actor.
pub fn init_process_logging(level: &str) -> bool {
    let fmt = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A plain level ("warn", the default) needs no directive parser: every child pays
    // for this at start-up.
    if let Ok(max) = level.parse::<tracing_subscriber::filter::LevelFilter>() {
        return fmt.with_max_level(max).try_init().is_ok();
    }
    let filter = match EnvFilter::try_new(level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("brood: invalid log filter {level:?} ({e}); using \"warn\"");
            EnvFilter::new("warn")
        }
    };
    fmt.with_env_filter(filter).try_init().is_ok()
}

/// The span every task of an actor runs in. At error level so that it is enabled (and
/// names the actor) whatever level the filter lets through.
pub(crate) fn actor_span(path: &str) -> tracing::Span {
    tracing::error_span!(parent: None, "actor", path = %path)
}
