//! The engine's log lines: JSON on stderr, one object per line, in the same shape as the
//! control plane's (`timestamp`, `level`, `message`, `target`, fields).

use std::sync::OnceLock;

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::reload;

type LevelHandle = reload::Handle<LevelFilter, tracing_subscriber::Registry>;

static LEVEL: OnceLock<LevelHandle> = OnceLock::new();

fn parse(level: &str) -> LevelFilter {
    match level {
        "trace" => LevelFilter::TRACE,
        "debug" => LevelFilter::DEBUG,
        "warn" => LevelFilter::WARN,
        "error" => LevelFilter::ERROR,
        "off" => LevelFilter::OFF,
        _ => LevelFilter::INFO,
    }
}

/// Installs the subscriber once per process; later calls only change the level.
pub fn init(level: &str) {
    let handle = LEVEL.get_or_init(|| {
        let (filter, handle) = reload::Layer::new(parse(level));
        let json = tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stderr);
        // Another subscriber may already be installed by an embedder; then it wins.
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(json)
            .try_init();
        handle
    });
    let _ = handle.modify(|f| *f = parse(level));
}

pub fn set_level(level: &str) {
    if let Some(handle) = LEVEL.get() {
        let _ = handle.modify(|f| *f = parse(level));
    }
}
