//! Prometheus metrics: a node-exporter textfile (`--metrics-textfile`) and/or a push to a
//! Pushgateway (`--pushgateway`). Names are documented in docs/OPERATIONS.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::error::{Error, Result};

/// One sample: name, labels, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

impl Sample {
    pub fn new(name: &'static str, value: f64) -> Self {
        Sample {
            name,
            labels: Vec::new(),
            value,
        }
    }

    pub fn label(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.labels.push((key, value.into()));
        self
    }

    fn render(&self) -> String {
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect();
        let labels = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", labels.join(","))
        };
        format!("{}{labels} {}", self.name, self.value)
    }
}

static RECORDED: std::sync::Mutex<Vec<Sample>> = std::sync::Mutex::new(Vec::new());

/// Record a command-specific sample; written with the run's own at the end.
pub fn record(sample: Sample) {
    RECORDED.lock().expect("lock").push(sample);
}

/// The run's samples: what commands recorded, plus time, duration and exit code.
pub fn finish(command: &str, exit_code: i32, duration: std::time::Duration) -> Vec<Sample> {
    let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    let mut all = std::mem::take(&mut *RECORDED.lock().expect("lock"));
    all.push(Sample::new("drydock_last_run_timestamp_seconds", now).label("command", command));
    all.push(Sample::new("drydock_last_exit_code", exit_code as f64).label("command", command));
    all.push(
        Sample::new("drydock_duration_seconds", duration.as_secs_f64()).label("command", command),
    );
    if exit_code == 0 {
        all.push(
            Sample::new("drydock_last_success_timestamp_seconds", now).label("command", command),
        );
    }
    all
}

/// Help text of every metric drydock writes.
pub const HELP: &[(&str, &str)] = &[
    ("drydock_last_run_timestamp_seconds", "Unix time the command last finished, successfully or not."),
    ("drydock_last_success_timestamp_seconds", "Unix time the command last finished with exit code 0."),
    ("drydock_last_exit_code", "Exit code of the last run (0 ok, 1 failure, 2 usage, 3 partial, 4 integrity, 5 key)."),
    ("drydock_duration_seconds", "Wall time of the last run."),
    ("drydock_backup_bytes", "Bytes of the last backup by kind: logical (in the snapshot), new, reused, stored (uploaded)."),
    ("drydock_backup_part_bytes", "Logical bytes of each part of the last backup."),
    ("drydock_snapshots", "Snapshots in the repository after the command."),
    ("drydock_drill_recovery_seconds", "Restore plus verify time of each part in the last drill, and in total."),
    ("drydock_drill_success", "1 if the last drill restored and verified every part, 0 otherwise."),
];

/// Render samples, keeping from `previous` (the old textfile) the last-success time of
/// commands that did not succeed now, so a failure does not erase when things last worked.
pub fn render(samples: &[Sample], previous: Option<&str>) -> String {
    let mut by_name: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for s in samples {
        by_name.entry(s.name).or_default().push(s.render());
    }
    if let Some(prev) = previous {
        let commands_now: Vec<String> = samples
            .iter()
            .filter(|s| s.name == "drydock_last_success_timestamp_seconds")
            .flat_map(|s| s.labels.iter().map(|(_, v)| v.clone()))
            .collect();
        for line in prev
            .lines()
            .filter(|l| l.starts_with("drydock_last_success_timestamp_seconds{"))
        {
            if !commands_now
                .iter()
                .any(|c| line.contains(&format!("command=\"{c}\"")))
            {
                by_name
                    .entry("drydock_last_success_timestamp_seconds")
                    .or_default()
                    .push(line.to_string());
            }
        }
    }
    let mut out = String::new();
    for (name, lines) in by_name {
        let help = HELP
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, h)| *h)
            .unwrap_or("");
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for l in lines {
            let _ = writeln!(out, "{l}");
        }
    }
    out
}

/// Write the textfile atomically (node-exporter may read it at any moment).
pub fn write_textfile(path: &Path, samples: &[Sample]) -> Result<()> {
    let previous = std::fs::read_to_string(path).ok();
    let text = render(samples, previous.as_deref());
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| {
        Error::io(
            format!("cannot write metrics next to {}", path.display()),
            e,
        )
    })?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    tmp.persist(path)
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e.error))?;
    Ok(())
}

/// Push to a Pushgateway under job `drydock` and the host as instance.
pub async fn push(url: &str, samples: &[Sample]) -> Result<()> {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let target = format!(
        "{}/metrics/job/drydock/instance/{host}",
        url.trim_end_matches('/')
    );
    let resp = reqwest::Client::new()
        .put(&target)
        .timeout(std::time::Duration::from_secs(15))
        .header("Content-Type", "text/plain; version=0.0.4")
        .body(render(samples, None))
        .send()
        .await
        .map_err(|e| Error::Other(format!("cannot push metrics to {target}: {e}")))?;
    if !resp.status().is_success() {
        return Err(Error::Other(format!(
            "the Pushgateway at {target} answered HTTP {}",
            resp.status().as_u16()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_keeps_the_last_success_of_other_runs() {
        let now = vec![
            Sample::new("drydock_last_exit_code", 1.0).label("command", "backup"),
            Sample::new("drydock_last_run_timestamp_seconds", 200.0).label("command", "backup"),
        ];
        let previous = "drydock_last_success_timestamp_seconds{command=\"backup\"} 100\n";
        let text = render(&now, Some(previous));
        assert!(text.contains("# TYPE drydock_last_exit_code gauge"));
        assert!(text.contains("drydock_last_exit_code{command=\"backup\"} 1"));
        assert!(
            text.contains("drydock_last_success_timestamp_seconds{command=\"backup\"} 100"),
            "{text}"
        );
        let ok =
            vec![Sample::new("drydock_last_success_timestamp_seconds", 300.0)
                .label("command", "backup")];
        let text = render(&ok, Some(previous));
        assert!(text.contains("} 300") && !text.contains("} 100"), "{text}");
    }
}
