//! Progress: an indicatif bar on a terminal, periodic log lines otherwise (CronJob logs).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::ids::ByteSize;
use crate::repo::writer::OnBytes;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    Auto,
    Always,
    Never,
}

/// How often a non-terminal run logs its progress.
const LOG_EVERY: Duration = Duration::from_secs(10);

pub struct Progress {
    bar: Option<ProgressBar>,
    bytes: AtomicU64,
    done: Arc<AtomicBool>,
    started: Instant,
}

impl Progress {
    pub fn new(mode: ProgressMode, label: &'static str, total: Option<u64>) -> Arc<Self> {
        let tty = std::io::stderr().is_terminal();
        let bar = match (mode, tty) {
            (ProgressMode::Always, _) | (ProgressMode::Auto, true) => {
                let bar = match total {
                    Some(t) => ProgressBar::new(t),
                    None => ProgressBar::new_spinner(),
                };
                bar.set_style(style(total.is_some()));
                bar.set_prefix(label);
                bar.enable_steady_tick(Duration::from_millis(200));
                Some(bar)
            }
            _ => None,
        };
        let p = Arc::new(Progress {
            bar,
            bytes: AtomicU64::new(0),
            done: Arc::new(AtomicBool::new(false)),
            started: Instant::now(),
        });
        if p.bar.is_none() && mode != ProgressMode::Never {
            let weak = Arc::downgrade(&p);
            let done = p.done.clone();
            std::thread::spawn(move || loop {
                std::thread::sleep(LOG_EVERY);
                if done.load(Ordering::Relaxed) {
                    return;
                }
                match weak.upgrade() {
                    Some(p) => p.log_line(label),
                    None => return,
                }
            });
        }
        p
    }

    fn log_line(&self, label: &str) {
        let bytes = self.bytes.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        tracing::info!(
            "{label}: {} processed, {}/s",
            ByteSize(bytes),
            ByteSize((bytes as f64 / secs) as u64)
        );
    }

    pub fn finish(&self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn style(known_total: bool) -> ProgressStyle {
    let template = if known_total {
        "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "{prefix} {spinner} {bytes} {bytes_per_sec} {elapsed}"
    };
    ProgressStyle::with_template(template)
        .expect("valid template")
        .progress_chars("=> ")
}

impl OnBytes for Progress {
    fn bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    fn total(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(n);
            bar.set_style(style(true));
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}
