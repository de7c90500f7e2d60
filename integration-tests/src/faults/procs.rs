//! Service processes a fault run can `kill -9`: the workspace's own binaries started with a
//! config file, their stdout and stderr appended to one log file per process (searched for
//! secrets afterwards).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context;

/// One service process, restartable with the same config and log.
pub struct Proc {
    pub name: String,
    bin: PathBuf,
    config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    /// Starts `bin --config <config>`; output goes to `<dir>/<name>.log`.
    pub fn start(name: &str, bin: PathBuf, config: PathBuf, dir: &Path) -> anyhow::Result<Self> {
        anyhow::ensure!(
            bin.exists(),
            "{} missing: build it first (`cargo build --release --workspace --bins`)",
            bin.display()
        );
        let mut p = Self {
            name: name.to_owned(),
            bin,
            config,
            log: dir.join(format!("{name}.log")),
            child: None,
        };
        p.spawn()?;
        Ok(p)
    }

    pub fn spawn(&mut self) -> anyhow::Result<()> {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new(&self.bin)
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        tracing::info!(name = %self.name, pid = child.id(), "process started");
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL: no drain, no final commit or flush.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            tracing::info!(name = %self.name, pid = c.id(), "kill -9");
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// SIGTERM and a wait for the graceful shutdown (SIGKILL after `grace`).
    pub fn stop(&mut self, grace: std::time::Duration) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if matches!(c.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A workspace binary: beside the running executable, or one folder up (test executables
/// live in `<target>/<profile>/deps/`).
/// `replicas` dispatcher processes sharing config `cfg`, written with their logs under a fresh
/// temporary folder named after `prefix`; each is named after its place in `replicas`.
pub fn dispatcher_replicas(
    cfg: &switchyard_dispatcher::DispatcherConfig,
    prefix: &str,
    replicas: &[&str],
) -> anyhow::Result<Vec<Proc>> {
    let dir = std::env::temp_dir().join(crate::unique(prefix));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("dispatcher.toml");
    std::fs::write(&file, toml::to_string(cfg)?)?;
    let dispatcher = bin("switchyard-dispatcher");
    replicas
        .iter()
        .map(|name| Proc::start(name, dispatcher.clone(), file.clone(), &dir))
        .collect()
}

pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let here = dir.join(name);
    if here.exists() {
        return here;
    }
    dir.parent().map(|d| d.join(name)).unwrap_or(here)
}

/// A loopback port free now (for a service whose address must survive its restarts).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
