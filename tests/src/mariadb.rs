//! Real MariaDB servers for the lab: one per host, each in its host's namespace with its own
//! datadir, socket and tmpdir under the lab's work directory, and master-master replication
//! between two of them (the classic keepalived pair: auto_increment_increment 2, offsets 1
//! and 2, GTID, short retry and heartbeat so that tests do not crawl).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};
use nix::sys::signal::Signal;

use crate::{Lab, Proc, run_with_timeout, wait_for};

/// The user xvrrp probes and fences with.
pub const PROBE_USER: &str = "xvrrp";
pub const PROBE_PASSWORD: &str = "probe-secret";
/// An ordinary application user: read_only stops its writes.
pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app-secret";
/// The application's database and table.
pub const APP_TABLE: &str = "appdb.writes";

/// One MariaDB server on a lab host.
pub struct Mariadb {
    pub host: String,
    pub server_id: u32,
    dir: PathBuf,
    server: Option<Proc>,
}

/// Whether a MariaDB test can run: root (see [`crate::privileged`]), and MariaDB installed
/// (`cargo xtask setup` installs it; missing, the test fails).
pub fn ready(test: &str) -> bool {
    if !crate::privileged(test) {
        return false;
    }
    assert!(
        available(),
        "{test}: mariadb-server is not installed (cargo xtask setup installs it)"
    );
    true
}

/// Whether MariaDB's server is installed here.
pub fn available() -> bool {
    Path::new("/usr/sbin/mariadbd").exists() && Path::new("/usr/bin/mariadb-install-db").exists()
}

impl Mariadb {
    /// Creates the server's files (datadir with users and the app schema) on `host`;
    /// `server_id` is 1 or 2 and sets the auto-increment offset.
    pub fn install(lab: &Lab, host: &str, server_id: u32) -> anyhow::Result<Self> {
        let dir = lab.workdir().join(format!("mariadb-{host}"));
        for sub in ["data", "tmp"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        let d = dir.display();
        fs::write(
            dir.join("my.cnf"),
            format!(
                "[mariadbd]\nuser=root\ndatadir={d}/data\nsocket={d}/sock\npid-file={d}/pid\ntmpdir={d}/tmp\n\
                 log-error={d}/error.log\nport=3306\nbind-address=0.0.0.0\nskip-name-resolve\n\
                 server-id={server_id}\ngtid-domain-id={server_id}\nlog-bin=binlog\nlog-slave-updates\n\
                 binlog-format=ROW\nauto-increment-increment=2\nauto-increment-offset={server_id}\n\
                 slave-net-timeout=4\nread-only=1\ninnodb-buffer-pool-size=32M\n\
                 innodb-log-file-size=16M\ninnodb-log-buffer-size=1M\nperformance-schema=OFF\n\
                 max-connections=50\n\n[client]\nsocket={d}/sock\nuser=root\n"
            ),
        )?;
        // Bootstrap runs with skip-grant-tables: FLUSH PRIVILEGES first. Nothing here is in
        // the binlog, so the two servers' users and schema never clash through replication.
        fs::write(
            dir.join("init.sql"),
            format!(
                "FLUSH PRIVILEGES;\n\
                 CREATE USER '{PROBE_USER}'@'%' IDENTIFIED BY '{PROBE_PASSWORD}';\n\
                 GRANT SLAVE MONITOR, READ_ONLY ADMIN, PROCESS, CONNECTION ADMIN ON *.* TO '{PROBE_USER}'@'%';\n\
                 CREATE USER 'repl'@'%' IDENTIFIED BY 'repl-secret';\n\
                 GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%';\n\
                 CREATE DATABASE appdb;\n\
                 CREATE TABLE {APP_TABLE} (id BIGINT AUTO_INCREMENT PRIMARY KEY, k VARCHAR(64) NOT NULL UNIQUE, server INT NOT NULL, at DATETIME(6) NOT NULL) ENGINE=InnoDB;\n\
                 CREATE USER '{APP_USER}'@'%' IDENTIFIED BY '{APP_PASSWORD}';\n\
                 GRANT SELECT, INSERT, UPDATE, DELETE ON appdb.* TO '{APP_USER}'@'%';\n"
            ),
        )?;
        let out = run_with_timeout(
            Command::new("mariadb-install-db")
                .arg(format!("--defaults-file={d}/my.cnf"))
                .arg("--auth-root-authentication-method=normal")
                .arg("--skip-test-db")
                .arg(format!("--extra-file={d}/init.sql")),
            Duration::from_secs(60),
        )?;
        ensure!(
            out.status.success(),
            "mariadb-install-db on {host}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(Self {
            host: host.to_owned(),
            server_id,
            dir,
            server: None,
        })
    }

    /// Makes the server speak TLS (from its next start) with a certificate for 127.0.0.1 and
    /// the host's address, signed by a CA of its own; requires TLS of the probe user. Returns
    /// the CA's PEM file.
    pub fn enable_tls(&self, lab: &Lab) -> anyhow::Result<PathBuf> {
        let d = &self.dir;
        let ip = lab.host(&self.host).ip;
        fs::write(
            d.join("server-ext.cnf"),
            format!(
                "subjectAltName=IP:127.0.0.1,IP:{ip}\nbasicConstraints=CA:FALSE\n\
                 keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
            ),
        )?;
        let steps: [&[&str]; 3] = [
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=xvrrp lab CA",
            ],
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=xvrrp lab server",
            ],
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "server-ext.cnf",
            ],
        ];
        for args in steps {
            let out = run_with_timeout(
                Command::new("openssl").args(args).current_dir(d),
                Duration::from_secs(60),
            )?;
            ensure!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let cnf = fs::read_to_string(d.join("my.cnf"))?;
        let dd = d.display();
        fs::write(
            d.join("my.cnf"),
            cnf.replacen(
                "[mariadbd]\n",
                &format!(
                    "[mariadbd]\nssl-ca={dd}/ca.pem\nssl-cert={dd}/server.pem\nssl-key={dd}/server.key\n"
                ),
                1,
            ),
        )?;
        fs::write(
            d.join("tls.sql"),
            format!("ALTER USER '{PROBE_USER}'@'%' REQUIRE SSL;\n"),
        )?;
        Ok(d.join("ca.pem"))
    }

    /// Applies what [`Mariadb::enable_tls`] prepared for the running server.
    pub fn require_tls(&self, lab: &Lab) -> anyhow::Result<()> {
        let sql = fs::read_to_string(self.dir.join("tls.sql"))?;
        self.sql(lab, &sql).map(drop)
    }

    /// `--defaults-file=...` of this server, for its client programs (as root, by socket).
    pub fn defaults_arg(&self) -> String {
        format!("--defaults-file={}", self.dir.join("my.cnf").display())
    }

    /// Starts mariadbd in the host's namespace and waits until it answers (at most 30 s).
    /// A server that aborts on one of InnoDB's own assertions while it recovers from a
    /// SIGKILL (MariaDB 10.11 has hit `trx0purge.cc line 901` after a few kills in a row, with
    /// an XA-prepared transaction left by the binlog) is started once more: that is the
    /// server's bug, not what a test here is about; the second abort fails the start.
    pub fn start(&mut self, lab: &Lab) -> anyhow::Result<()> {
        ensure!(self.server.is_none(), "already running");
        let log = self.dir.join("error.log");
        for attempt in 1..=2 {
            let logged = fs::metadata(&log).map_or(0, |m| m.len() as usize);
            let mut proc = lab.spawn(
                &self.host,
                Path::new("/usr/sbin/mariadbd"),
                &[&self.defaults_arg()],
                &format!("mariadbd-{}", self.host),
            )?;
            let up = wait_for(Duration::from_secs(30), || {
                !proc.running() || self.sql(lab, "SELECT 1").is_ok_and(|r| r == "1")
            });
            if up && proc.running() {
                self.server = Some(proc);
                return Ok(());
            }
            let text = fs::read_to_string(&log).unwrap_or_default();
            let this_start = text.get(logged..).unwrap_or_default();
            if attempt == 1 && !proc.running() && this_start.contains("InnoDB: Assertion failure") {
                eprintln!(
                    "mariadbd on {} aborted on an InnoDB assertion while it recovered; starting it once more",
                    self.host
                );
                continue;
            }
            bail!(
                "mariadbd on {} did not come up; error log:\n{text}",
                self.host
            );
        }
        unreachable!("the second attempt returns")
    }

    /// The server's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Proc::pid)
    }

    /// Whether the server runs (false once it exited, e.g. killed from outside).
    pub fn running(&mut self) -> bool {
        let up = self.server.as_mut().is_some_and(Proc::running);
        if !up {
            self.server = None;
        }
        up
    }

    /// Sends `signal` to the server; for a signal that ends it, waits for the end.
    pub fn signal(&mut self, signal: Signal) -> anyhow::Result<()> {
        let proc = self.server.as_mut().context("not running")?;
        match signal {
            Signal::SIGKILL | Signal::SIGTERM => {
                proc.stop(signal, Duration::from_secs(60))?;
                self.server = None;
            }
            _ => nix::sys::signal::kill(nix::unistd::Pid::from_raw(proc.pid() as i32), signal)?,
        }
        Ok(())
    }

    /// Runs SQL as root through the server's own socket; the output, tab-separated, trimmed.
    pub fn sql(&self, lab: &Lab, sql: &str) -> anyhow::Result<String> {
        self.mariadb(lab, &["-N", "-B", "-e", sql])
    }

    /// Like [`Mariadb::sql`], one `column: value` line each (the client's vertical output).
    pub fn sql_vertical(&self, lab: &Lab, sql: &str) -> anyhow::Result<String> {
        self.mariadb(lab, &["-E", "-e", sql])
    }

    fn mariadb(&self, lab: &Lab, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec![self.defaults_arg()];
        full.extend(args.iter().map(|a| (*a).to_owned()));
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        let out = lab.run(&self.host, "mariadb", &full, Duration::from_secs(20))?;
        ensure!(
            out.status.success(),
            "{args:?} on {}: {}",
            self.host,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The server's read_only, as it says.
    pub fn read_only(&self, lab: &Lab) -> anyhow::Result<bool> {
        Ok(self.sql(lab, "SELECT @@global.read_only")? == "1")
    }

    /// Makes this server a replica of `source` (by its host's address).
    pub fn replicate_from(&self, lab: &Lab, source: &Mariadb) -> anyhow::Result<()> {
        let ip = lab.host(&source.host).ip;
        self.sql(
            lab,
            &format!(
                "CHANGE MASTER TO MASTER_HOST='{ip}', MASTER_PORT=3306, MASTER_USER='repl', \
                 MASTER_PASSWORD='repl-secret', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1, \
                 MASTER_HEARTBEAT_PERIOD=1; START SLAVE;"
            ),
        )?;
        Ok(())
    }

    /// Whether both replication threads run.
    pub fn replicating(&self, lab: &Lab) -> bool {
        self.sql_vertical(lab, "SHOW SLAVE STATUS").is_ok_and(|s| {
            s.contains("Slave_IO_Running: Yes") && s.contains("Slave_SQL_Running: Yes")
        })
    }

    /// The `[[mysql]]` block xvrrp on this host uses to probe and fence its server; `extra`
    /// lines are added.
    pub fn xvrrp_target(&self, extra: &str) -> String {
        format!(
            "[[mysql]]\nname = \"local\"\nhost = \"127.0.0.1\"\nuser = \"{PROBE_USER}\"\n\
             password = \"{PROBE_PASSWORD}\"\ninterval_ms = 100\ntimeout_ms = 300\nrise = 2\nfall = 2\n\
             replication = true\nmax_lag_s = 5\nreplication_weight = -150\n{extra}\n"
        )
    }
}

/// Creates `appdb.counter` (one row, n = 0) on `db`; it replicates to the peer. The app user
/// may update it.
pub fn create_counter(lab: &Lab, db: &Mariadb) -> anyhow::Result<()> {
    db.sql(
        lab,
        "CREATE TABLE appdb.counter (id INT PRIMARY KEY, n BIGINT NOT NULL) ENGINE=InnoDB; \
         INSERT INTO appdb.counter VALUES (1, 0)",
    )?;
    Ok(())
}

/// Two servers replicating from each other, on hosts `a` and `b` of `lab`; returns once both
/// replicate (at most 30 s).
pub fn master_master_pair(lab: &Lab, a: &str, b: &str) -> anyhow::Result<(Mariadb, Mariadb)> {
    let mut one = Mariadb::install(lab, a, 1)?;
    let mut two = Mariadb::install(lab, b, 2)?;
    one.start(lab)?;
    two.start(lab)?;
    one.replicate_from(lab, &two)?;
    two.replicate_from(lab, &one)?;
    ensure!(
        wait_for(Duration::from_secs(30), || one.replicating(lab)
            && two.replicating(lab)),
        "replication did not start: {} / {}",
        one.sql_vertical(lab, "SHOW SLAVE STATUS")
            .unwrap_or_default(),
        two.sql_vertical(lab, "SHOW SLAVE STATUS")
            .unwrap_or_default()
    );
    Ok((one, two))
}

/// Runs `sql` as the app user against `addr` from `from`'s namespace until the first column
/// of the first row is `want` or `within` passes; when the answer came (None: never). A new
/// attempt (connection and query, bounded by `attempt`) starts every 2 ms, so that one
/// attempt stuck on a dead path does not hide the moment the answer comes.
pub fn wait_answer(
    lab: &Lab,
    from: &str,
    addr: std::net::Ipv4Addr,
    sql: &str,
    want: &str,
    attempt: Duration,
    within: Duration,
) -> anyhow::Result<Option<std::time::Instant>> {
    let (sql, want) = (sql.to_owned(), want.to_owned());
    lab.host(from).ns.run_in(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let start = std::time::Instant::now();
            let mut attempts = tokio::task::JoinSet::new();
            let mut tick = tokio::time::interval(Duration::from_millis(2));
            while start.elapsed() < within {
                tokio::select! {
                    _ = tick.tick() => {
                        if attempts.len() < 64 {
                            let sql = sql.clone();
                            attempts.spawn(async move { query_once(addr, &sql, attempt).await });
                        }
                    }
                    Some(done) = attempts.join_next() => {
                        if done.ok().flatten().as_deref() == Some(want.as_str()) {
                            return Ok(Some(std::time::Instant::now()));
                        }
                    }
                }
            }
            Ok(None)
        })
    })
}

/// How the app user connects to `addr` (over TCP only: see ../shared/MARIADB.md on
/// prefer_socket).
fn app_opts(addr: std::net::Ipv4Addr) -> mysql_async::OptsBuilder {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname(addr.to_string())
        .tcp_port(3306)
        .user(Some(APP_USER))
        .pass(Some(APP_PASSWORD))
        .prefer_socket(false)
}

/// Waits until `db`'s server answers `SELECT @@server_id` through `addr` from `from` (see
/// [`wait_answer`]); when it did.
pub fn wait_served_by(
    lab: &Lab,
    from: &str,
    addr: std::net::Ipv4Addr,
    db: &Mariadb,
    attempt: Duration,
    within: Duration,
) -> anyhow::Result<Option<std::time::Instant>> {
    wait_answer(
        lab,
        from,
        addr,
        "SELECT @@server_id",
        &db.server_id.to_string(),
        attempt,
        within,
    )
}

/// One connection and query as the app user, within `timeout`; the first column of the
/// first row.
pub async fn query_once(addr: std::net::Ipv4Addr, sql: &str, timeout: Duration) -> Option<String> {
    use mysql_async::prelude::Queryable as _;
    let opts = app_opts(addr);
    tokio::time::timeout(timeout, async {
        let mut conn = mysql_async::Conn::new(opts).await.ok()?;
        let row: Option<String> = conn.query_first(sql).await.ok()?;
        let _ = conn.disconnect().await;
        row
    })
    .await
    .ok()
    .flatten()
}

/// A client that inserts rows through an address as fast as it can, one connection at a time
/// (reconnecting after any error), and remembers which inserts were acknowledged. Each row
/// holds a unique key, the server_id that took it and the server's UTC time.
pub struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    progress: std::sync::Arc<Progress>,
    thread: std::thread::JoinHandle<anyhow::Result<Vec<String>>>,
}

/// What a [`Writer`] has done so far.
#[derive(Default)]
pub struct Progress {
    /// Inserts acknowledged.
    pub acked: std::sync::atomic::AtomicU64,
    /// Inserts that failed (the connection is then opened anew).
    pub failed: std::sync::atomic::AtomicU64,
    /// The server_id of the server the current connection reached (0: none).
    pub server: std::sync::atomic::AtomicU32,
}

impl Writer {
    pub fn start(lab: &Lab, from: &str, addr: std::net::Ipv4Addr) -> anyhow::Result<Self> {
        Self::start_with(lab, from, addr, "w", false)
    }

    /// A writer whose keys start with `tag` (writers running at once need different tags);
    /// with `increment`, each write is `UPDATE appdb.counter SET n = n + 1` instead of an
    /// insert (the table is created by [`create_counter`]).
    pub fn start_with(
        lab: &Lab,
        from: &str,
        addr: std::net::Ipv4Addr,
        tag: &str,
        increment: bool,
    ) -> anyhow::Result<Self> {
        use std::sync::atomic::Ordering;
        let tag = tag.to_owned();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let progress = std::sync::Arc::new(Progress::default());
        let shared = progress.clone();
        let thread = lab.host(from).ns.spawn_in(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                use mysql_async::prelude::Queryable as _;
                let mut acked = Vec::new();
                let mut n = 0u64;
                let opts = app_opts(addr);
                let bound = Duration::from_millis(300);
                while !flag.load(Ordering::SeqCst) {
                    let Ok(Ok(mut conn)) =
                        tokio::time::timeout(bound, mysql_async::Conn::new(opts.clone())).await
                    else {
                        shared.server.store(0, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    };
                    if let Ok(Ok(Some(id))) = tokio::time::timeout(
                        bound,
                        conn.query_first::<u32, _>("SELECT @@server_id"),
                    )
                    .await
                    {
                        shared.server.store(id, Ordering::Relaxed);
                    }
                    while !flag.load(Ordering::SeqCst) {
                        n += 1;
                        let k = format!("{tag}{n}");
                        let insert = if increment {
                            "UPDATE appdb.counter SET n = n + 1 WHERE id = 1".to_owned()
                        } else {
                            format!(
                                "INSERT INTO {APP_TABLE} (k, server, at) VALUES ('{k}', @@server_id, UTC_TIMESTAMP(6))"
                            )
                        };
                        match tokio::time::timeout(bound, conn.query_drop(insert)).await {
                            Ok(Ok(())) => {
                                acked.push(k);
                                shared.acked.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {
                                shared.failed.fetch_add(1, Ordering::Relaxed);
                                shared.server.store(0, Ordering::Relaxed);
                                break;
                            }
                        }
                    }
                }
                Ok(acked)
            })
        })?;
        Ok(Self {
            stop,
            progress,
            thread,
        })
    }

    /// What it has done so far.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Stops the writer; the keys of the acknowledged inserts.
    pub fn finish(self) -> anyhow::Result<Vec<String>> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("writer thread panicked"))?
    }
}
