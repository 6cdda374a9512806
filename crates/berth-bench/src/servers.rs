//! The processes the benchmark starts: berth, Distribution (Debian's `docker-registry`) and
//! nginx, each on a free loopback port with its own temporary directory and log file, killed
//! when the benchmark ends (and by the kernel if the benchmark dies first).

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

use crate::http::{Conn, Endpoint};

/// A free port on 127.0.0.1 (the listener is dropped at once; a race with another process
/// taking it in between is possible but harmless: the server then fails to start and says so).
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?)
}

/// Memory figures of a process, from /proc/<pid>/status, in KiB.
#[derive(Debug, Clone, Copy)]
pub struct Mem {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub fn mem_of(pid: u32) -> Option<Mem> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(Mem {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// Open file descriptors of a process: the entries of /proc/<pid>/fd.
pub fn fds_of(pid: u32) -> Option<u64> {
    let dir = fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(dir.count() as u64)
}

/// A server process and how to start it again.
pub struct Server {
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    pub endpoint: Arc<Endpoint>,
    /// The path that answers 200 once the server is ready.
    pub ready_path: String,
    /// The data directory, emptied by [`Server::wipe`].
    data: Option<PathBuf>,
}

impl Server {
    pub fn new(
        name: &str,
        program: &Path,
        args: Vec<String>,
        envs: Vec<(String, String)>,
        log: PathBuf,
        endpoint: Arc<Endpoint>,
        ready_path: &str,
    ) -> Self {
        Self {
            name: name.to_owned(),
            program: program.to_owned(),
            args,
            envs,
            log,
            child: None,
            endpoint,
            ready_path: ready_path.to_owned(),
            data: None,
        }
    }

    /// Starts the process and waits for the first 200 on the ready path; returns the time
    /// from spawn to that answer. Must be called from the thread that runs the benchmark's
    /// main future (the child is tied to that thread's life, see `spawn`).
    pub async fn start(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let started = self.spawn()?;
        self.wait_ready(started, timeout).await
    }

    fn spawn(&mut self) -> anyhow::Result<Instant> {
        if self.child.is_some() {
            bail!("{} is already running", self.name);
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut cmd = Command::new(&self.program);
        // The benchmark's own settings (BERTH_BENCH_*) are not the servers': berth would read
        // them as configuration (BERTH_*) and refuse the unknown keys.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("BERTH_BENCH_") {
                cmd.env_remove(key);
            }
        }
        cmd.args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // The server dies with the benchmark, whatever kills it.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let started = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} ({})", self.name, self.program.display()))?;
        self.child = Some(child);
        Ok(started)
    }

    async fn wait_ready(
        &mut self,
        started: Instant,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let mut last: String;
        loop {
            let mut conn = Conn::new(self.endpoint.clone()).with_timeout(Duration::from_secs(2));
            match conn.get(&self.ready_path, &[]).await {
                Ok(r) if r.status == 200 => return Ok(started.elapsed()),
                Ok(r) => last = r.describe(),
                Err(e) => last = format!("{e:#}"),
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!(
                    "{} exited with {status} before it was ready; log: {}\n{}",
                    self.name,
                    self.log.display(),
                    tail(&self.log)
                );
            }
            if started.elapsed() > timeout {
                bail!(
                    "{} not ready after {timeout:?} (last answer: {last}); log: {}\n{}",
                    self.name,
                    self.log.display(),
                    tail(&self.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.as_mut() {
            None => bail!("{} is not running", self.name),
            Some(c) => match c.try_wait()? {
                None => Ok(()),
                Some(status) => {
                    self.child = None;
                    Err(anyhow!(
                        "{} exited with {status}; log: {}\n{}",
                        self.name,
                        self.log.display(),
                        tail(&self.log)
                    ))
                }
            },
        }
    }

    fn with_data(mut self, data: PathBuf) -> Self {
        self.data = Some(data);
        self
    }

    /// Empties the data directory of a stopped server.
    pub fn wipe(&self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("{} is running: stop it before wiping its data", self.name);
        }
        if let Some(d) = &self.data {
            if d.exists() {
                fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
            }
            fs::create_dir_all(d)?;
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id() as libc::pid_t;
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        loop {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{} did not stop within {grace:?} of SIGTERM", self.name);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn mem(&self) -> Option<Mem> {
        mem_of(self.pid()?)
    }

    /// Where the process's stdout and stderr go.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Resets the process's peak RSS (VmHWM) to its current RSS, so the next reading is the
    /// peak of what happens from now on.
    pub fn reset_peak(&self) {
        if let Some(pid) = self.pid() {
            let _ = fs::write(format!("/proc/{pid}/clear_refs"), "5");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The last lines of a log, for error messages.
pub fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Environment that keeps berth's background jobs and request logs quiet, so that only the
/// measured work runs (Distribution runs at log level error likewise). Authentication is off,
/// as it is in the Distribution it is compared with (equivalent settings). `extra` comes last
/// and overrides any of these (the last value of a variable wins).
pub fn berth_env(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    [
        ("BERTH_AUTH__ENABLED", "false"),
        ("BERTH_GC__SCHEDULE", ""),
        ("BERTH_SCRUB__SCHEDULE", ""),
        ("BERTH_LOG__LEVEL", "error"),
        ("RUST_LOG", "error"),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

pub fn berth(
    name: &str,
    bin: &Path,
    dir: &Path,
    addr: SocketAddr,
    endpoint: Arc<Endpoint>,
    env: Vec<(String, String)>,
) -> anyhow::Result<Server> {
    let data = dir.join("data");
    fs::create_dir_all(&data)?;
    Ok(Server::new(
        name,
        bin,
        vec![
            "serve".into(),
            "--listen".into(),
            addr.to_string(),
            "--data-dir".into(),
            data.display().to_string(),
        ],
        env,
        dir.join("server.log"),
        endpoint,
        "/v2/",
    )
    .with_data(data))
}

/// One of this binary's reference servers (see `refserver`): `args` after the program name.
pub fn reference(
    name: &str,
    dir: &Path,
    addr: SocketAddr,
    args: &[&str],
) -> anyhow::Result<Server> {
    fs::create_dir_all(dir)?;
    let me = std::env::current_exe().context("the benchmark's own path")?;
    let mut all = vec![args[0].to_owned(), addr.to_string()];
    all.extend(args[1..].iter().map(|a| a.to_string()));
    Ok(Server::new(
        name,
        &me,
        all,
        Vec::new(),
        dir.join(format!("{name}.log")),
        Endpoint::plain(addr),
        "/v2/",
    ))
}

/// Distribution 2.8 with the filesystem driver, deletes enabled, the in-memory blob
/// descriptor cache of Debian's packaged configuration, and log level error.
pub fn distribution(bin: &Path, dir: &Path, addr: SocketAddr) -> anyhow::Result<Server> {
    let data = dir.join("data");
    fs::create_dir_all(&data)?;
    let config = dir.join("config.yml");
    fs::write(
        &config,
        format!(
            "version: 0.1\n\
             log:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  cache:\n    blobdescriptor: inmemory\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n",
            data.display()
        ),
    )?;
    Ok(Server::new(
        "distribution",
        bin,
        vec!["serve".into(), config.display().to_string()],
        Vec::new(),
        dir.join("server.log"),
        Endpoint::plain(addr),
        "/v2/",
    )
    .with_data(data))
}

/// nginx from Debian with its built-in defaults (one static `server`, default buffers,
/// `sendfile` off as nginx's own default) serving `root`; a second server on `addr_sendfile`
/// has `sendfile on` as Debian's packaged nginx.conf does, for information.
pub fn nginx(
    bin: &Path,
    dir: &Path,
    root: &Path,
    addr: SocketAddr,
    addr_sendfile: SocketAddr,
) -> anyhow::Result<Server> {
    fs::create_dir_all(dir.join("logs"))?;
    let conf = dir.join("nginx.conf");
    let d = dir.display();
    let r = root.display();
    // Workers would run as `nobody` under a root master and might not read the work tree.
    // SAFETY: geteuid has no preconditions.
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root;\n"
    } else {
        ""
    };
    fs::write(
        &conf,
        format!(
            "daemon off;\n\
             {user}\
             worker_processes auto;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/logs/error.log error;\n\
             events {{ }}\n\
             http {{\n\
             \x20 access_log off;\n\
             \x20 client_body_temp_path {d}/body;\n\
             \x20 proxy_temp_path {d}/proxy;\n\
             \x20 fastcgi_temp_path {d}/fastcgi;\n\
             \x20 uwsgi_temp_path {d}/uwsgi;\n\
             \x20 scgi_temp_path {d}/scgi;\n\
             \x20 types {{ application/octet-stream bin; application/vnd.oci.image.manifest.v1+json json; }}\n\
             \x20 server {{ listen {addr}; root {r}; }}\n\
             \x20 server {{ listen {addr_sendfile}; root {r}; sendfile on; }}\n\
             }}\n"
        ),
    )?;
    Ok(Server::new(
        "nginx",
        bin,
        vec![
            "-c".into(),
            conf.display().to_string(),
            "-p".into(),
            dir.display().to_string(),
            "-e".into(),
            format!("{d}/logs/error.log"),
        ],
        Vec::new(),
        dir.join("server.log"),
        Endpoint::plain(addr),
        "/manifest.json",
    ))
}

/// Free space on the filesystem holding `path`, in GiB.
pub fn free_gib(path: &Path) -> Option<f64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we pass; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as f64 * st.f_frsize as f64 / (1u64 << 30) as f64)
}
