//! A PostgreSQL server of a test's own: `initdb` into a temporary folder and `postgres` on a
//! free port, from the binaries `deploy/local/postgres.sh` installed. A test restarts it for
//! real (`pg_ctl restart -m immediate`: every backend killed, crash recovery on start) without
//! touching the shared server the other tests use.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// A running private server; stopped (immediate) when dropped.
pub struct PrivatePg {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
}

impl PrivatePg {
    /// Creates a cluster in `dir/pgdata` (trust auth for the local user `postgres`) and starts it.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let bin = newest_bin()?;
        let data = dir.join("pgdata");
        std::fs::create_dir_all(dir)?;
        let pg = Self {
            dir: dir.to_path_buf(),
            bin,
            port: crate::faults::procs::free_port()?,
        };
        if running_as_root() {
            // postgres refuses to run as root: the folder belongs to the postgres user.
            run(Command::new("chown").arg("postgres:postgres").arg(dir))?;
        }
        run(pg
            .cmd("initdb")
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data))?;
        pg.ctl("start")?;
        Ok(pg)
    }

    /// `postgres://postgres@127.0.0.1:<port>/<db>`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Kills every backend at once and starts again (`-m immediate`: crash recovery, as after a
    /// power cut); returns when the server accepts connections.
    pub fn restart(&self) -> anyhow::Result<()> {
        self.ctl("restart")
    }

    fn ctl(&self, action: &str) -> anyhow::Result<()> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.display()
        );
        run(self
            .cmd("pg_ctl")
            .args([action, "-w", "-t", "60", "-m", "immediate", "-D"])
            .arg(self.dir.join("pgdata"))
            .args(["-l"])
            .arg(self.dir.join("postgres.log"))
            .args(["-o", &opts]))
    }

    fn cmd(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self
            .cmd("pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.dir.join("pgdata"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `/usr/lib/postgresql/<newest>/bin`.
fn newest_bin() -> anyhow::Result<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .with_context(|| format!("{} (run deploy/local/postgres.sh)", root.display()))?
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .context("no PostgreSQL server binaries under /usr/lib/postgresql")
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
