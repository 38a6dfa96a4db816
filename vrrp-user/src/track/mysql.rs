//! MySQL / MariaDB health as tracking input, and write fencing with `read_only`, through
//! mysql_async (no fork/exec).
//!
//! A probe keeps one connection for its checks (`SELECT @@global.read_only`, which is the
//! liveness check too, an optional query, replication status) and a second one parked in a long `SELECT SLEEP()`: when the server dies, the kernel
//! closes both sockets and the parked query fails at once, so a dead server is a failure
//! event at once, not at the next interval. Every call is bounded by the target's timeout
//! (the driver has none of its own), and `prefer_socket` is off: the driver would otherwise
//! swap a TCP connection for a local unix socket of the same name, and probe the wrong server.

use std::{fmt, io, net::SocketAddr, time::Duration};

use mysql_async::{Conn, OptsBuilder, Row, prelude::Queryable as _};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::{
    config::MysqlTarget,
    control::{MysqlStatus, ReplicationStatus},
    engine::{TrackId, TrackInput},
    track::RiseFall,
};

/// The track under which a target's liveness (the read_only query and the optional query)
/// reaches the engine.
pub fn alive_track(target: &str) -> TrackId {
    TrackId::Mysql(target.to_owned())
}

/// The track under which a target's replication health reaches the engine.
pub fn replication_track(target: &str) -> TrackId {
    TrackId::Replication(target.to_owned())
}

/// Why a call to the server failed: each has its own log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The host name does not resolve.
    UnknownHost(String),
    /// Nothing listens (connection refused): the server is not running.
    NotRunning,
    /// The server refused our credentials (1045 and kin).
    AuthFailed(String),
    /// No answer within the timeout: the server hangs, or the path to it is cut.
    Timeout,
    /// The connection was closed under us: the server died or dropped us.
    Gone(String),
    /// The server answered with an error.
    Server(u16, String),
    /// The check ran and its result is not what is expected.
    Check(String),
    /// Anything else the driver reports.
    Other(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::UnknownHost(h) => write!(f, "unknown host {h:?}"),
            Failure::NotRunning => write!(f, "server not running (connection refused)"),
            Failure::AuthFailed(m) => write!(f, "authentication failed: {m}"),
            Failure::Timeout => write!(f, "timed out: server hanging or unreachable"),
            Failure::Gone(m) => write!(f, "server gone: {m}"),
            Failure::Server(code, m) => write!(f, "server error {code}: {m}"),
            Failure::Check(m) => write!(f, "check failed: {m}"),
            Failure::Other(m) => write!(f, "{m}"),
        }
    }
}

impl Failure {
    /// Whether the failure means the connection is no longer usable.
    fn drops_connection(&self) -> bool {
        !matches!(self, Failure::Server(..) | Failure::Check(_))
    }
}

fn classify(err: mysql_async::Error) -> Failure {
    use mysql_async::{DriverError, Error, IoError};
    match err {
        Error::Server(e) if matches!(e.code, 1044 | 1045 | 1698 | 1251) => {
            Failure::AuthFailed(e.message)
        }
        Error::Server(e) => Failure::Server(e.code, e.message),
        Error::Io(IoError::Io(e)) => match e.kind() {
            io::ErrorKind::ConnectionRefused => Failure::NotRunning,
            io::ErrorKind::TimedOut => Failure::Timeout,
            _ => Failure::Gone(e.to_string()),
        },
        Error::Driver(DriverError::ConnectionClosed) => Failure::Gone("connection closed".into()),
        other => Failure::Other(other.to_string()),
    }
}

/// Runs `fut` within `timeout`, classifying what fails.
async fn bounded<T>(
    timeout: Duration,
    fut: impl Future<Output = Result<T, mysql_async::Error>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => Err(Failure::Timeout),
        Ok(r) => r.map_err(classify),
    }
}

/// The first column of the first row `query` returns, as text (None: no row, or NULL). Never
/// panics on a row of another shape (a user's query with several columns, or a result left on
/// the connection by a cancelled call).
async fn scalar(
    conn: &mut Conn,
    timeout: Duration,
    query: &str,
) -> Result<Option<String>, Failure> {
    let rows: Vec<Row> = bounded(timeout, conn.query(query)).await?;
    Ok(rows
        .into_iter()
        .next()
        .and_then(|row| row.get_opt::<Option<String>, usize>(0))
        .and_then(Result::ok)
        .flatten())
}

/// `@@global.read_only` on `conn`.
async fn read_only_of(conn: &mut Conn, timeout: Duration) -> Result<Option<bool>, Failure> {
    Ok(scalar(conn, timeout, "SELECT @@global.read_only")
        .await?
        .map(|v| v.trim() != "0"))
}

/// Resolves the target's address (bounded): an unknown host is its own outcome.
async fn resolve(t: &MysqlTarget) -> Result<SocketAddr, Failure> {
    let timeout = Duration::from_millis(t.timeout_ms);
    let found = tokio::time::timeout(timeout, tokio::net::lookup_host((t.host.as_str(), t.port)))
        .await
        .map_err(|_| Failure::Timeout)?
        .map_err(|_| Failure::UnknownHost(t.host.clone()))?
        .next();
    found.ok_or_else(|| Failure::UnknownHost(t.host.clone()))
}

/// Opens a connection to the target (bounded).
pub async fn connect(t: &MysqlTarget) -> Result<Conn, Failure> {
    let addr = resolve(t).await?;
    let mut opts = OptsBuilder::default()
        .ip_or_hostname(addr.ip().to_string())
        .tcp_port(addr.port())
        .user(Some(t.user.clone()))
        .pass(Some(t.password.expose().to_owned()))
        .prefer_socket(false)
        .tcp_nodelay(true)
        .stmt_cache_size(0);
    if t.tls {
        let mut ssl = mysql_async::SslOpts::default();
        if let Some(ca) = &t.tls_ca {
            ssl = ssl.with_root_certs(vec![ca.clone().into()]);
        }
        opts = opts.ssl_opts(Some(ssl));
    }
    bounded(Duration::from_millis(t.timeout_ms), Conn::new(opts)).await
}

/// What a replica reports about its replication.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replication {
    /// Whether replication is configured at all (a row came back).
    pub configured: bool,
    pub io_running: String,
    pub sql_running: bool,
    pub seconds_behind: Option<u64>,
    pub last_io_error: String,
    pub last_sql_errno: u64,
    pub last_sql_error: String,
    /// The relay log has been applied up to what was received.
    pub caught_up: bool,
}

impl Replication {
    /// Healthy for taking the VIP: the SQL thread applies with no error and lags at most
    /// `max_lag_s`. The IO thread is not counted: with the peer dead it reconnects forever,
    /// which must not keep the survivor from taking over.
    pub fn healthy(&self, max_lag_s: u64) -> Result<(), String> {
        if !self.configured {
            return Err("replication is not configured (no replica status)".into());
        }
        if !self.sql_running {
            return Err(if self.last_sql_errno != 0 {
                format!(
                    "SQL thread stopped by error {}: {}",
                    self.last_sql_errno, self.last_sql_error
                )
            } else {
                "SQL thread not running".into()
            });
        }
        match self.seconds_behind {
            Some(lag) if lag > max_lag_s => Err(format!(
                "lagging {lag} s behind the source (limit {max_lag_s} s)"
            )),
            _ => Ok(()),
        }
    }
}

/// The statement that reports replica status on this server: MySQL 8.0.22+ has SHOW REPLICA
/// STATUS (8.4 dropped SHOW SLAVE STATUS); MariaDB keeps SHOW SLAVE STATUS.
fn replica_statement(version: &str) -> &'static str {
    let mariadb = version.to_ascii_lowercase().contains("mariadb");
    let numbers: Vec<u32> = version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .take(3)
        .filter_map(|p| p.parse().ok())
        .collect();
    let at_least = |want: [u32; 3]| numbers.as_slice() >= want.as_slice();
    if !mariadb && at_least([8, 0, 22]) {
        "SHOW REPLICA STATUS"
    } else {
        "SHOW SLAVE STATUS"
    }
}

/// Reads the replica status on `conn`, whichever column names the server uses.
async fn replication(
    conn: &mut Conn,
    statement: &str,
    timeout: Duration,
) -> Result<Replication, Failure> {
    let rows: Vec<Row> = bounded(timeout, conn.query(statement)).await?;
    let Some(row) = rows.into_iter().next() else {
        return Ok(Replication::default());
    };
    let text = |names: &[&str]| -> Option<String> {
        names.iter().find_map(|n| {
            row.columns_ref()
                .iter()
                .position(|c| c.name_str() == *n)
                .and_then(|i| row.get_opt::<Option<String>, _>(i))
                .and_then(Result::ok)
                .flatten()
        })
    };
    let number = |names: &[&str]| text(names).and_then(|t| t.parse::<u64>().ok());
    let read_file = text(&["Master_Log_File", "Source_Log_File"]);
    let exec_file = text(&["Relay_Master_Log_File", "Relay_Source_Log_File"]);
    let read_pos = number(&["Read_Master_Log_Pos", "Read_Source_Log_Pos"]);
    let exec_pos = number(&["Exec_Master_Log_Pos", "Exec_Source_Log_Pos"]);
    Ok(Replication {
        configured: true,
        io_running: text(&["Slave_IO_Running", "Replica_IO_Running"]).unwrap_or_default(),
        sql_running: text(&["Slave_SQL_Running", "Replica_SQL_Running"]).as_deref() == Some("Yes"),
        seconds_behind: number(&["Seconds_Behind_Master", "Seconds_Behind_Source"]),
        last_io_error: text(&["Last_IO_Error"]).unwrap_or_default(),
        last_sql_errno: number(&["Last_SQL_Errno"]).unwrap_or(0),
        last_sql_error: text(&["Last_SQL_Error"]).unwrap_or_default(),
        caught_up: read_file.is_some() && read_file == exec_file && read_pos == exec_pos,
    })
}

/// What one round of checks found.
struct Round {
    /// Ping and the optional query.
    alive: Result<(), Failure>,
    /// The replica status, when asked for and read.
    replication: Option<Result<Replication, Failure>>,
    read_only: Option<bool>,
}

/// One round of checks on an open connection: `SELECT @@global.read_only` (an answer is
/// liveness), the optional query, the replication status when asked for. A failure of the
/// first two ends the round; so does a lost connection during the third.
async fn check(t: &MysqlTarget, conn: &mut Conn, statement: &str) -> Round {
    let timeout = Duration::from_millis(t.timeout_ms);
    let failed = |f| Round {
        alive: Err(f),
        replication: None,
        read_only: None,
    };
    // The read_only query is the liveness check too: a server that answers a query is alive
    // (a COM_PING first would only add a round trip).
    let read_only = match read_only_of(conn, timeout).await {
        Ok(v) => v,
        Err(f) => return failed(f),
    };
    if let Some(query) = &t.query {
        match scalar(conn, timeout, query).await {
            Ok(Some(v)) if t.expect.as_deref().is_none_or(|e| e == v) => {}
            Ok(v) => {
                return failed(Failure::Check(format!(
                    "{query:?} returned {:?}, expected {}",
                    v,
                    t.expect
                        .as_ref()
                        .map_or("a value".to_owned(), |e| format!("{e:?}"))
                )));
            }
            Err(f) => return failed(f),
        }
    }
    let replication = match &t.replication {
        None => None,
        Some(_) => match replication(conn, statement, timeout).await {
            Err(f) if f.drops_connection() => return failed(f),
            r => Some(r),
        },
    };
    Round {
        alive: Ok(()),
        replication,
        read_only,
    }
}

/// The status a probe shares with `xvrrp status`.
pub type SharedStatus = std::sync::Arc<std::sync::Mutex<MysqlStatus>>;

/// A fresh status for target `t`.
pub fn new_status(t: &MysqlTarget) -> SharedStatus {
    std::sync::Arc::new(std::sync::Mutex::new(MysqlStatus {
        name: t.name.clone(),
        address: format!("{}:{}", t.host, t.port),
        ..MysqlStatus::default()
    }))
}

fn update(status: &SharedStatus, f: impl FnOnce(&mut MysqlStatus)) {
    if let Ok(mut s) = status.lock() {
        f(&mut s);
    }
}

/// Rise / fall where the very first result decides at once (the daemon starts knowing
/// nothing; waiting `rise` intervals would only delay the first election).
struct Tracked {
    name: TrackId,
    rise: u32,
    fall: u32,
    state: Option<RiseFall>,
    why: String,
}

impl Tracked {
    fn new(name: TrackId, rise: u32, fall: u32) -> Self {
        Self {
            name,
            rise,
            fall,
            state: None,
            why: String::new(),
        }
    }

    /// Records a result (`at_once`: a failure that does not wait for `fall`), sending a
    /// change to the engine; false when the engine is gone.
    fn record(
        &mut self,
        result: Result<(), String>,
        at_once: bool,
        tx: &mpsc::UnboundedSender<(TrackId, TrackInput)>,
    ) -> bool {
        let ok = result.is_ok();
        let why = result.err().unwrap_or_default();
        if !ok && why != self.why {
            warn!(track = %self.name, reason = %why, "MySQL check failed");
        }
        self.why = why;
        let flipped = match &mut self.state {
            Some(state) if !(at_once && !ok && state.is_up()) => state.record(ok),
            _ => {
                let was = self.state.as_ref().map(RiseFall::is_up);
                self.state = Some(RiseFall::new(self.rise, self.fall, ok));
                (was != Some(ok)).then_some(ok)
            }
        };
        let Some(up) = flipped else {
            return true;
        };
        if up {
            info!(track = %self.name, "MySQL check up");
        } else {
            warn!(track = %self.name, reason = %self.why, "MySQL check down");
        }
        tx.send((
            self.name.clone(),
            if up { TrackInput::Up } else { TrackInput::Down },
        ))
        .is_ok()
    }
}

/// Kills the connections `ids` that are still the probe user's own (the server lists them under
/// this user), from `conn`; errors are ignored (they may be gone already).
async fn kill_own(t: &MysqlTarget, conn: &mut Conn, ids: Vec<u32>) {
    if ids.is_empty() {
        return;
    }
    let timeout = Duration::from_millis(t.timeout_ms);
    let list = ids
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let own: Vec<u64> = bounded(
        timeout,
        conn.query(format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE ID IN ({list}) \
             AND USER = SUBSTRING_INDEX(CURRENT_USER(), '@', 1)"
        )),
    )
    .await
    .unwrap_or_default();
    for id in own {
        let _ = bounded(timeout, conn.query_drop(format!("KILL CONNECTION {id}"))).await;
    }
}

/// A connection parked in a long sleep (see [`park`]). Dropping it ends the task that holds
/// the connection (the socket closes); the server learns of it within seconds, or at once when
/// the next connection kills it by its id.
struct Parked {
    gone: oneshot::Receiver<Failure>,
    task: tokio::task::JoinHandle<()>,
    id: u32,
}

impl Drop for Parked {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Parks a connection in a long sleep; `gone` fires when the query ends (the server closed
/// the connection, or it was killed).
fn park(mut conn: Conn) -> Parked {
    let (tx, rx) = oneshot::channel();
    let id = conn.id();
    let task = tokio::spawn(async move {
        let failure = loop {
            let r: Result<Option<u64>, _> = conn.query_first("SELECT SLEEP(3600)").await;
            match r {
                // SLEEP returns 1 when interrupted by KILL QUERY: park again.
                Ok(_) => continue,
                Err(e) => break classify(e),
            }
        };
        let _ = tx.send(failure);
    });
    Parked { gone: rx, task, id }
}

/// A probe round in flight: it owns the check connection and hands it back with its result.
type RoundFuture = std::pin::Pin<Box<dyn Future<Output = (Conn, Round)> + Send>>;

/// What a probe round found, taken in: the status, the latency, a fence again if a fenced
/// server reads writable, and the alive and replication tracks. False when the daemon is gone.
fn on_round(
    t: &MysqlTarget,
    round: Round,
    took: Duration,
    (status, latency, fencer): (
        &SharedStatus,
        &prometheus_client::metrics::histogram::Histogram,
        Option<&Fencer>,
    ),
    (alive, repl): (&mut Tracked, &mut Tracked),
    tx: &mpsc::UnboundedSender<(TrackId, TrackInput)>,
) -> bool {
    let verdict = match (&round.replication, &t.replication) {
        (Some(Ok(r)), Some(c)) => Some(r.healthy(c.max_lag_s)),
        (Some(Err(f)), _) => Some(Err(f.to_string())),
        _ => None,
    };
    update(status, |s| {
        s.probes += 1;
        s.last_round_us = took.as_micros() as u64;
        latency.observe(took.as_secs_f64());
        s.alive = Some(round.alive.is_ok());
        match &round.alive {
            Ok(()) => s.reason.clear(),
            Err(f) => {
                s.failures += 1;
                s.reason = f.to_string();
            }
        }
        if round.alive.is_ok() {
            s.read_only = round.read_only;
        }
        if let (Some(Ok(r)), Some(v)) = (&round.replication, &verdict) {
            s.replication = Some(ReplicationStatus {
                healthy: v.is_ok(),
                problem: v.clone().err().unwrap_or_default(),
                io_running: r.io_running.clone(),
                sql_running: r.sql_running,
                seconds_behind: r.seconds_behind,
                last_io_error: r.last_io_error.clone(),
            });
        }
    });
    // A server that should be fenced and reads writable (restarted from its my.cnf, or set by
    // hand) is fenced again at once.
    if round.read_only == Some(false)
        && let Some(f) = fencer
        && f.state.borrow().safe()
    {
        warn!(target = %t.name, "writable while fenced: fencing again");
        f.request_fence();
    }
    if !alive.record(round.alive.map_err(|f| f.to_string()), false, tx) {
        return false;
    }
    verdict.is_none_or(|v| repl.record(v, false, tx))
}

/// Probes `t` forever, sending (track, Up/Down) on every change: the alive track, and the
/// replication track when replication is checked. Each round's duration goes into `latency`.
pub fn spawn_probe(
    t: MysqlTarget,
    tx: mpsc::UnboundedSender<(TrackId, TrackInput)>,
    status: SharedStatus,
    latency: prometheus_client::metrics::histogram::Histogram,
    fencer: Option<Fencer>,
) -> tokio::task::JoinHandle<()> {
    let interval = Duration::from_millis(t.interval_ms);
    let timeout = Duration::from_millis(t.timeout_ms);
    // How long a round that has not answered may keep its connection: a lossy path
    // retransmits, and a new connection would leave the old one on the server until its close
    // gets through (the server would hold three); only a path silent this long is given up on.
    let give_up = (timeout * 10).max(Duration::from_secs(30));
    let probe = Probe {
        // The target as a round sees it: its queries wait up to `give_up`, the round's own
        // deadline (`timeout`) is kept by the ticks.
        patient: std::sync::Arc::new(MysqlTarget {
            timeout_ms: give_up.as_millis() as u64,
            ..t.clone()
        }),
        alive: Tracked::new(alive_track(&t.name), t.rise, t.fall),
        repl: Tracked::new(replication_track(&t.name), t.rise, t.fall),
        t,
        timing: (interval, timeout, give_up),
        out: (tx, status, latency, fencer),
        backoff: interval,
        connections: 0,
        stale: Vec::new(),
    };
    tokio::spawn(probe.run())
}

/// The probe's owner stopped listening for its verdicts: the task ends.
struct Closed;

/// One MySQL target's probe, and what it keeps from one connection to the next.
struct Probe {
    t: MysqlTarget,
    patient: std::sync::Arc<MysqlTarget>,
    /// The interval between rounds, a round's timeout, and how long a late round may keep
    /// its connection.
    timing: (Duration, Duration, Duration),
    alive: Tracked,
    repl: Tracked,
    /// Where the verdicts go: the engine's tracks, the status, the latency histogram, the
    /// fencer.
    out: (
        mpsc::UnboundedSender<(TrackId, TrackInput)>,
        SharedStatus,
        prometheus_client::metrics::histogram::Histogram,
        Option<Fencer>,
    ),
    backoff: Duration,
    connections: u64,
    /// The server-side ids of the last connections, killed from the next one: a connection
    /// given up on a lossy path (its check timed out) must not linger on the server.
    stale: Vec<u32>,
}

impl Probe {
    async fn run(mut self) {
        loop {
            let (conn, version, watcher) = match self.open().await {
                Ok(opened) => opened,
                Err(f) => match self.unreachable(f).await {
                    Ok(()) => continue,
                    Err(Closed) => return,
                },
            };
            match self.rounds(conn, version, watcher).await {
                Ok(Some((failure, ids))) => {
                    if self.lost(failure, ids).is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(Closed) => return,
            }
        }
    }

    /// Connects: the check connection, its server's dialect, and the parked watcher.
    async fn open(&self) -> Result<(Conn, String, Conn), Failure> {
        let t = &self.t;
        let mut conn = connect(t).await?;
        let timeout = Duration::from_millis(t.timeout_ms);
        let version = scalar(&mut conn, timeout, "SELECT VERSION()").await?;
        let watcher = connect(t).await?;
        Ok((conn, version.unwrap_or_default(), watcher))
    }

    /// The server cannot be reached: a failed check, then a wait (backing off up to 2 s).
    async fn unreachable(&mut self, f: Failure) -> Result<(), Closed> {
        let (tx, status, ..) = &self.out;
        update(status, |s| {
            s.alive = Some(false);
            s.reason = f.to_string();
            s.failures += 1;
        });
        if !self.alive.record(Err(f.to_string()), false, tx) {
            return Err(Closed);
        }
        // Replication is unknown while the server is: it must prove healthy again (rise)
        // before it counts, or a returning server whose replica still connects would take the
        // VIP and lose it again at once.
        if self.t.replication.is_some()
            && !self
                .repl
                .record(Err("the server is not reachable".into()), false, tx)
        {
            return Err(Closed);
        }
        tokio::time::sleep(self.backoff).await;
        let interval = self.timing.0;
        self.backoff = (self.backoff * 2).min(Duration::from_secs(2)).max(interval);
        Ok(())
    }

    /// Runs rounds on a connection until it fails: the failure and the server-side ids of the
    /// connection and its watcher. None: no timer could be made (tried again in a second).
    async fn rounds(
        &mut self,
        mut conn: Conn,
        version: String,
        watcher: Conn,
    ) -> Result<Option<(Failure, [u32; 2])>, Closed> {
        let interval = self.timing.0;
        self.backoff = interval;
        self.connections += 1;
        kill_own(&self.t, &mut conn, std::mem::take(&mut self.stale)).await;
        let t = &self.t;
        update(&self.out.1, |s| {
            s.version.clone_from(&version);
            s.reconnects = self.connections - 1;
        });
        info!(target = %t.name, host = %t.host, port = t.port, %version, "MySQL probe connected");
        let statement = replica_statement(&version);
        let check_id = conn.id();
        let mut parked = park(watcher);
        // Rounds on a timerfd (see crate::alarm): one wake-up per round, not two.
        let mut ticker = match crate::alarm::Alarm::new() {
            Ok(a) => a,
            Err(e) => {
                warn!(target = %t.name, error = %e, "cannot create a timerfd; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                return Ok(None);
            }
        };
        let failure = self.tick(conn, statement, &mut parked, &mut ticker).await?;
        Ok(Some((failure, [check_id, parked.id])))
    }

    /// The rounds of one connection, each started by the timer. A round runs on the connection
    /// it owns and hands it back. One that has not answered within timeout_ms is a failed
    /// check at every tick until it answers (a lossy path retransmits: the answer may still
    /// come, and the connection stays good); only after `give_up` is the connection given up
    /// on.
    async fn tick(
        &mut self,
        conn: Conn,
        statement: &'static str,
        parked: &mut Parked,
        ticker: &mut crate::alarm::Alarm,
    ) -> Result<Failure, Closed> {
        let (interval, timeout, give_up) = self.timing;
        let Self {
            t,
            patient,
            alive,
            repl,
            out: (tx, status, latency, fencer),
            ..
        } = self;
        let mut next = std::time::Instant::now();
        let mut conn = Some(conn);
        let mut in_flight: Option<RoundFuture> = None;
        let mut round_started = std::time::Instant::now();
        let mut late = false;
        loop {
            if let Err(e) = ticker.set(next) {
                return Ok(Failure::Other(format!("timerfd: {e}")));
            }
            tokio::select! {
                f = &mut parked.gone => return Ok(f.unwrap_or(Failure::Gone("watcher ended".into()))),
                (c, round) = async { in_flight.as_mut().expect("guarded").await }, if in_flight.is_some() => {
                    in_flight = None;
                    conn = Some(c);
                    let dropped = round.alive.as_ref().err().filter(|f| f.drops_connection()).cloned();
                    if std::mem::take(&mut late) {
                        // Counted as failed while it ran late; only a lost connection matters now.
                        if let Some(f) = dropped {
                            return Ok(f);
                        }
                        continue;
                    }
                    let took = round_started.elapsed();
                    if !on_round(t, round, took, (status, latency, fencer.as_ref()), (alive, repl), tx) {
                        return Err(Closed);
                    }
                    if let Some(f) = dropped {
                        return Ok(f);
                    }
                }
                fired = ticker.fired() => {
                    if let Err(e) = fired {
                        return Ok(Failure::Other(format!("timerfd: {e}")));
                    }
                    // A late round delays the next ones rather than bunching them.
                    next = (next + interval).max(std::time::Instant::now());
                    if in_flight.is_some() {
                        let waited = round_started.elapsed();
                        if waited >= give_up {
                            return Ok(Failure::Timeout);
                        }
                        if waited >= timeout {
                            late = true;
                            update(status, |s| {
                                s.probes += 1;
                                s.alive = Some(false);
                                s.failures += 1;
                                s.reason = Failure::Timeout.to_string();
                            });
                            if !alive.record(Err(Failure::Timeout.to_string()), false, tx) {
                                return Err(Closed);
                            }
                        }
                        continue;
                    }
                    let Some(mut c) = conn.take() else {
                        return Ok(Failure::Other("no connection".into()));
                    };
                    let patient = patient.clone();
                    round_started = std::time::Instant::now();
                    in_flight = Some(Box::pin(async move {
                        let round = check(&patient, &mut c, statement).await;
                        (c, round)
                    }));
                }
            }
        }
    }

    /// The connection failed: a closed connection is a failure at once; a timeout waits for
    /// `fall` like any other failed check, and the connection is opened anew. Given up on, not
    /// closed by the server (a timeout on a lossy path), the connections are killed from the
    /// next one; a server that went away took them with it (and may reuse their ids).
    fn lost(&mut self, failure: Failure, ids: [u32; 2]) -> Result<(), Closed> {
        let at_once = matches!(failure, Failure::Gone(_) | Failure::NotRunning);
        let (tx, status, ..) = &self.out;
        update(status, |s| {
            s.alive = Some(false);
            s.reason = failure.to_string();
            s.failures += 1;
        });
        if !self.alive.record(Err(failure.to_string()), at_once, tx) {
            return Err(Closed);
        }
        if self.t.replication.is_some() && !self.repl.record(Err(failure.to_string()), at_once, tx)
        {
            return Err(Closed);
        }
        if !at_once {
            self.stale = ids.to_vec();
        }
        Ok(())
    }
}

/// A command to a target's fencer.
enum FenceCmd {
    /// Set read_only (again, even if it is thought set); answers once the first attempt is
    /// done. Retries go on in the background until the server reads back read_only = 1.
    Fence(Option<oneshot::Sender<()>>),
    /// Enable writes: after the relay log is applied (when asked), while the write lease is
    /// held (when configured), and once the peer's server is read_only or unreachable.
    Unfence,
}

/// What a fencer knows of its server's writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FenceState {
    /// Started, no command yet: the server is left as it is (a daemon that resumes after a
    /// hitless restart must not fence a master's server while it starts).
    Unknown,
    Fencing,
    /// read_only = 1, read back.
    Fenced,
    /// The server is not running (connection refused): it takes no writes.
    Down,
    /// Waiting to enable writes (catch-up, lease, peer).
    Unfencing,
    Unfenced,
    /// The last attempt failed; retried every 100 ms.
    Failed(String),
}

impl FenceState {
    /// Whether the server cannot take writes from ordinary users now.
    pub fn safe(&self) -> bool {
        matches!(self, FenceState::Fenced | FenceState::Down)
    }
}

impl fmt::Display for FenceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FenceState::Unknown => write!(f, "unknown"),
            FenceState::Fencing => write!(f, "fencing"),
            FenceState::Fenced => write!(f, "fenced"),
            FenceState::Down => write!(f, "down"),
            FenceState::Unfencing => write!(f, "unfencing"),
            FenceState::Unfenced => write!(f, "unfenced"),
            FenceState::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

/// What a fencer waits for before it enables writes.
#[derive(Clone, Default)]
pub struct FenceGate {
    /// The write lease: writes only while it is held (and fenced at once when it is not).
    pub held: Option<tokio::sync::watch::Receiver<bool>>,
    /// After a hitless restart: how long a master's server, in an unknown state (writable, as
    /// the last daemon left it), is left alone while the lease is renewed.
    pub resume_grace: Duration,
    /// The peer's server: set read_only before writes are enabled here, and kept so.
    pub peer: Option<MysqlTarget>,
}

/// Sets and clears a server's read_only, in order, on a connection of its own.
#[derive(Clone)]
pub struct Fencer {
    name: String,
    tx: mpsc::UnboundedSender<FenceCmd>,
    timeout: Duration,
    state: tokio::sync::watch::Receiver<FenceState>,
}

/// The fencer's loop state.
struct FenceTask {
    t: MysqlTarget,
    gate: FenceGate,
    status: SharedStatus,
    state: tokio::sync::watch::Sender<FenceState>,
    conn: Option<Conn>,
    peer_conn: Option<Conn>,
    /// The catch-up wait's own connection: a wait cancelled mid-query leaves its result
    /// unread, so the connection is dropped then.
    catch_up_conn: Option<Conn>,
    /// The last command was Unfence.
    master: bool,
    /// Promotion: the peer's server was fenced (or found unreachable) under the lease.
    peer_checked: bool,
    /// What the fenced peer had written (its GTID domains), for the catch-up wait.
    peer_gtid: Option<String>,
    caught_up: bool,
    /// A Fence command asks for the statement again.
    force: bool,
    waiters: Vec<oneshot::Sender<()>>,
    /// Since when fencing has failed on a lock wait (a transaction holds it off).
    blocked_since: Option<std::time::Instant>,
    started: std::time::Instant,
}

impl FenceTask {
    fn held(&self) -> bool {
        self.gate.held.as_ref().is_none_or(|h| *h.borrow())
    }

    fn set(&mut self, state: FenceState) {
        update(&self.status, |s| s.fence = state.to_string());
        self.state.send_replace(state);
    }

    /// One step towards what is wanted: fenced, or (master, caught up, lease held) writable.
    async fn act(&mut self) {
        let current = self.state.borrow().clone();
        if current == FenceState::Unknown && !self.force && !self.master {
            return;
        }
        // A resumed master's server (unknown: as the last daemon left it, writable) is left
        // alone while the lease is renewed (at most the grace) and the promotion runs: fencing
        // it would cut the writes a hitless restart keeps.
        let resuming = current == FenceState::Unknown && self.master;
        if resuming && !self.held() && self.started.elapsed() < self.gate.resume_grace {
            return;
        }
        if resuming && self.held() && !self.caught_up && !self.gate.resume_grace.is_zero() {
            if !self.peer_checked {
                self.peer_checked = self.check_peer().await;
                if self.peer_checked {
                    // check_peer marked the state; it is still the resumed, writable one.
                    self.set(FenceState::Unknown);
                }
            }
            return;
        }
        if self.master && self.held() && !self.peer_checked && current.safe() {
            self.peer_checked = self.check_peer().await;
            return;
        }
        if !(self.master && self.caught_up && self.held()) {
            if self.force || !current.safe() {
                self.force = false;
                if current == FenceState::Unfenced && self.master {
                    warn!(target = %self.t.name, "write lease lost: fencing");
                }
                // Polling a server that is down keeps it Down meanwhile: watchers (the lease)
                // must not see it flap through Fencing every 10 ms.
                if current != FenceState::Down {
                    self.set(FenceState::Fencing);
                }
                let next = match fence_and_check(&self.t, &mut self.conn).await {
                    Ok(()) => {
                        info!(target = %self.t.name, "fenced: read_only ON");
                        self.blocked_since = None;
                        FenceState::Fenced
                    }
                    Err(Failure::NotRunning) => FenceState::Down,
                    Err(f) => {
                        warn!(target = %self.t.name, reason = %f, "cannot set read_only ON; retrying");
                        // The next try starts on a fresh connection: whatever went wrong cannot
                        // leave a reply behind that the next statement would read as its own.
                        self.conn = None;
                        escalate(&self.t, &mut self.blocked_since, &f).await;
                        FenceState::Failed(f.to_string())
                    }
                };
                if next != current || current != FenceState::Down {
                    self.set(next);
                }
                for w in self.waiters.drain(..) {
                    let _ = w.send(());
                }
            }
        } else if current != FenceState::Unfenced {
            info!(target = %self.t.name, "setting read_only OFF");
            match set_read_only(&self.t, &mut self.conn, false).await {
                Ok(()) => {
                    info!(target = %self.t.name, "writes enabled: read_only OFF");
                    self.set(FenceState::Unfenced);
                }
                Err(f) => {
                    warn!(target = %self.t.name, reason = %f, "cannot set read_only OFF");
                    self.set(FenceState::Failed(f.to_string()));
                }
            }
        }
    }

    /// Before the catch-up wait of a promotion (once the lease is held): the peer's server set
    /// read_only, and what it wrote read, so that the wait covers it. False: the peer answered
    /// but could not be fenced (retried).
    async fn check_peer(&mut self) -> bool {
        self.peer_gtid = None;
        let Some(peer) = self.gate.peer.clone() else {
            return true;
        };
        self.set(FenceState::Unfencing);
        match fence_peer(&peer, &mut self.peer_conn, &self.status).await {
            PeerFence::Fenced => {
                self.peer_gtid = peer_writes(&peer, &mut self.peer_conn).await;
                true
            }
            PeerFence::Unreachable => true,
            PeerFence::Refused => {
                self.set(FenceState::Failed(format!(
                    "the peer's server {} could not be set read_only",
                    peer.name
                )));
                false
            }
        }
    }

    fn command(&mut self, cmd: FenceCmd) {
        match cmd {
            FenceCmd::Fence(done) => {
                if self.master && !self.caught_up {
                    info!(target = %self.t.name, "promotion cancelled before writes were enabled");
                }
                self.master = false;
                self.caught_up = false;
                self.peer_checked = false;
                self.force = true;
                if let Some(done) = done {
                    self.waiters.push(done);
                }
            }
            FenceCmd::Unfence => {
                if !self.master {
                    self.master = true;
                    self.caught_up = false;
                    self.peer_checked = false;
                }
            }
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<FenceCmd>) {
        let mut held = self.gate.held.clone();
        loop {
            // One step may enable the next (fenced, then the peer checked): act until nothing
            // changes.
            for _ in 0..4 {
                let before = (
                    self.state.borrow().clone(),
                    self.peer_checked,
                    self.caught_up,
                );
                self.act().await;
                if (
                    self.state.borrow().clone(),
                    self.peer_checked,
                    self.caught_up,
                ) == before
                {
                    break;
                }
            }
            let state = self.state.borrow().clone();
            // Failed attempts are retried; a writable master keeps the peer's server fenced.
            let tick = match state {
                FenceState::Failed(_) => Some(Duration::from_millis(100)),
                // A server that is down may come back writable (read_only is not kept across a
                // restart): it is fenced within 10 ms of accepting connections.
                FenceState::Down if !self.master => Some(Duration::from_millis(10)),
                // A resumed master's server left alone while the lease is renewed: fenced when
                // the grace ends without it.
                FenceState::Unknown if self.master && !self.held() => Some(
                    self.gate
                        .resume_grace
                        .saturating_sub(self.started.elapsed())
                        .max(Duration::from_millis(1)),
                ),
                FenceState::Unfenced if self.gate.peer.is_some() => {
                    Some(Duration::from_millis(self.t.interval_ms))
                }
                _ => None,
            };
            // The catch-up wait runs once the lease is held and the peer is fenced.
            let catching_up = self.master && !self.caught_up && self.held() && self.peer_checked;
            let woke = tokio::select! {
                cmd = rx.recv() => Woke::Command(cmd),
                () = catch_up(&self.t, &mut self.catch_up_conn, self.peer_gtid.as_deref()), if catching_up => Woke::CaughtUp,
                r = async { held.as_mut().expect("guarded").changed().await }, if held.is_some() => {
                    Woke::Lease(r.is_ok())
                }
                () = async {
                    match tick {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending().await,
                    }
                } => Woke::Tick,
            };
            if catching_up && !matches!(woke, Woke::CaughtUp) {
                self.catch_up_conn = None;
            }
            match woke {
                Woke::Command(Some(cmd)) => self.command(cmd),
                Woke::Command(None) => return,
                Woke::CaughtUp => self.caught_up = true,
                Woke::Lease(true) => {
                    if !self.held() {
                        // Lost: a promotion starts again (peer and catch-up) once it is back.
                        self.peer_checked = false;
                        self.caught_up = false;
                    }
                }
                Woke::Lease(false) => {
                    // The lease task ended (the daemon is stopping): no writes any more.
                    held = None;
                    self.gate.held = None;
                    self.master = false;
                }
                Woke::Tick => {
                    if state == FenceState::Down {
                        self.force = true;
                    }
                    if state == FenceState::Unfenced
                        && let Some(peer) = self.gate.peer.clone()
                    {
                        fence_peer_if_writable(&peer, &mut self.peer_conn, &self.status).await;
                    }
                }
            }
        }
    }
}

/// What woke a fencer.
enum Woke {
    Command(Option<FenceCmd>),
    CaughtUp,
    /// The lease changed (true), or its task ended (false).
    Lease(bool),
    Tick,
}

impl Fencer {
    pub fn spawn(t: MysqlTarget, gate: FenceGate, status: SharedStatus) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let (state_tx, state) = tokio::sync::watch::channel(FenceState::Unknown);
        let fencer = Self {
            name: t.name.clone(),
            tx,
            timeout: Duration::from_millis(t.timeout_ms) * 2,
            state,
        };
        let task = FenceTask {
            t,
            gate,
            status,
            state: state_tx,
            conn: None,
            peer_conn: None,
            catch_up_conn: None,
            master: false,
            peer_checked: false,
            peer_gtid: None,
            caught_up: false,
            force: false,
            waiters: Vec::new(),
            blocked_since: None,
            started: std::time::Instant::now(),
        };
        tokio::spawn(task.run(rx));
        fencer
    }

    /// Sets read_only and waits until the first attempt is done, at most twice the timeout
    /// (retries go on in the background).
    pub async fn fence(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(FenceCmd::Fence(Some(done))).is_ok()
            && tokio::time::timeout(self.timeout, wait).await.is_err()
        {
            warn!(target = %self.name, "fencing did not finish in time; going on");
        }
    }

    /// Sets read_only without waiting (a demotion inside the event loop, or a server seen
    /// writable while fenced); the fencer retries until it reads back.
    pub fn request_fence(&self) {
        let _ = self.tx.send(FenceCmd::Fence(None));
    }

    /// Enables writes in the background, once the gates are open.
    pub fn unfence(&self) {
        let _ = self.tx.send(FenceCmd::Unfence);
    }

    /// The target's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the fencer knows now, and its changes.
    pub fn state(&self) -> tokio::sync::watch::Receiver<FenceState> {
        self.state.clone()
    }
}

/// Keeps `fenced` true while every fencer's server cannot take writes (read back read_only,
/// or down): the write lease is released only then.
pub fn report_fenced(
    mut states: Vec<tokio::sync::watch::Receiver<FenceState>>,
    fenced: tokio::sync::watch::Sender<bool>,
) {
    tokio::spawn(async move {
        loop {
            let all = states.iter().all(|s| s.borrow().safe());
            fenced.send_if_modified(|f| std::mem::replace(f, all) != all);
            if states.is_empty() {
                return;
            }
            let changed = states.iter_mut().map(|s| Box::pin(s.changed()));
            if futures::future::select_all(changed).await.0.is_err() {
                return;
            }
        }
    });
}

/// One attempt to set read_only on `t` and read it back, on a connection of its own (an error
/// exit's last act).
pub async fn fence_once(t: &MysqlTarget) -> Result<(), String> {
    let mut conn = None;
    fence_and_check(t, &mut conn)
        .await
        .map_err(|f| f.to_string())
}

/// Sets read_only and reads it back.
async fn fence_and_check(t: &MysqlTarget, conn: &mut Option<Conn>) -> Result<(), Failure> {
    set_read_only(t, conn, true).await?;
    let timeout = Duration::from_millis(t.timeout_ms);
    let c = conn.as_mut().expect("open after set_read_only");
    match read_only_of(c, timeout).await {
        Ok(Some(true)) => Ok(()),
        Ok(v) => Err(Failure::Check(format!("read_only read back as {v:?}"))),
        Err(f) => {
            if f.drops_connection() {
                *conn = None;
            }
            Err(f)
        }
    }
}

/// What fencing the peer's server found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PeerFence {
    /// read_only = 1, read back.
    Fenced,
    /// Not reachable (refused, timed out, unknown): the lease decides.
    Unreachable,
    /// It answered but could not be fenced: writes stay off here (retried).
    Refused,
}

/// Before writes are enabled here: the peer's server set read_only, or found unreachable.
async fn fence_peer(
    peer: &MysqlTarget,
    conn: &mut Option<Conn>,
    status: &SharedStatus,
) -> PeerFence {
    match fence_and_check(peer, conn).await {
        Ok(()) => {
            info!(peer = %peer.name, "the peer's server is read_only");
            update(status, |s| s.peer_read_only = Some(true));
            PeerFence::Fenced
        }
        Err(
            f @ (Failure::NotRunning
            | Failure::Timeout
            | Failure::UnknownHost(_)
            | Failure::Gone(_)),
        ) => {
            *conn = None;
            warn!(peer = %peer.name, reason = %f, "the peer's server is unreachable; enabling writes on the lease alone");
            update(status, |s| s.peer_read_only = None);
            PeerFence::Unreachable
        }
        Err(f) => {
            *conn = None;
            warn!(peer = %peer.name, reason = %f, "cannot set the peer's server read_only; writes stay off");
            // A lock wait on the peer: its sessions are killed at once (the peer is not master
            // by our lease; a transaction there must not keep writes off here).
            if peer.fence_escalate_ms.is_some() && lock_wait(&f) {
                kill_app_sessions(peer, Duration::ZERO).await;
            }
            PeerFence::Refused
        }
    }
}

/// What the fenced peer wrote: its `@@gtid_binlog_pos` without this node's own domain is
/// read on the local server later (MariaDB's GTIDs; None elsewhere, or if unreadable).
async fn peer_writes(peer: &MysqlTarget, conn: &mut Option<Conn>) -> Option<String> {
    let c = conn.as_mut()?;
    let timeout = Duration::from_millis(peer.timeout_ms);
    let version = scalar(c, timeout, "SELECT VERSION()").await.ok()??;
    if !version.to_ascii_lowercase().contains("mariadb") {
        return None;
    }
    scalar(c, timeout, "SELECT @@global.gtid_binlog_pos")
        .await
        .ok()?
}

/// The GTIDs of `pos` ("D-S-N,...") outside `own_domain`.
fn foreign_gtids(pos: &str, own_domain: &str) -> String {
    pos.split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty() && g.split('-').next() != Some(own_domain))
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether a failure is a lock wait: a running transaction holds `SET GLOBAL read_only` off.
fn lock_wait(f: &Failure) -> bool {
    matches!(f, Failure::Server(1205, _)) || matches!(f, Failure::Timeout)
}

/// A fence held off by a lock wait for longer than `fence_escalate_ms`: kills the sessions of
/// the other users (the application's), which also makes pooled clients reconnect through
/// the VIP. The probe user needs CONNECTION ADMIN (or SUPER) and PROCESS.
async fn escalate(t: &MysqlTarget, since: &mut Option<std::time::Instant>, f: &Failure) {
    let Some(after) = t.fence_escalate_ms else {
        return;
    };
    if !lock_wait(f) {
        *since = None;
        return;
    }
    let started = *since.get_or_insert_with(std::time::Instant::now);
    if started.elapsed() < Duration::from_millis(after) {
        return;
    }
    kill_app_sessions(t, started.elapsed()).await;
    *since = None;
}

/// Kills the sessions of every user but the probe user, replication and the server's own
/// threads (`waited`: how long the fence was held off, for the log).
async fn kill_app_sessions(t: &MysqlTarget, waited: Duration) {
    let timeout = Duration::from_millis(t.timeout_ms);
    let Ok(mut c) = connect(t).await else { return };
    let ids: Vec<u64> = bounded(
        timeout,
        c.exec(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() \
             AND USER NOT IN (?, 'system user', 'event_scheduler', 'unauthenticated user') \
             AND COMMAND NOT IN ('Binlog Dump', 'Binlog Dump GTID', 'Daemon')",
            (t.user.as_str(),),
        ),
    )
    .await
    .unwrap_or_default();
    for id in &ids {
        let _ = bounded(timeout, c.query_drop(format!("KILL CONNECTION {id}"))).await;
    }
    warn!(target = %t.name, killed = ids.len(), waited_ms = waited.as_millis() as u64,
        "fence held off by a lock: application sessions killed");
}

/// While writable here: the peer's server found writable is fenced at once.
async fn fence_peer_if_writable(
    peer: &MysqlTarget,
    conn: &mut Option<Conn>,
    status: &SharedStatus,
) {
    if conn.is_none() {
        *conn = connect(peer).await.ok();
    }
    let Some(c) = conn.as_mut() else { return };
    let timeout = Duration::from_millis(peer.timeout_ms);
    match read_only_of(c, timeout).await {
        Ok(Some(false)) => {
            warn!(peer = %peer.name, "the peer's server is writable while this node is: fencing it");
            update(status, |s| s.peer_read_only = Some(false));
            let _ = fence_peer(peer, conn, status).await;
        }
        Ok(v) => update(status, |s| s.peer_read_only = v),
        Err(_) => *conn = None,
    }
}

/// Sets `read_only` (and `super_read_only` where the server has it) on the fencer's
/// connection, opening it when needed.
async fn set_read_only(t: &MysqlTarget, conn: &mut Option<Conn>, on: bool) -> Result<(), Failure> {
    let timeout = Duration::from_millis(t.timeout_ms);
    if conn.is_none() {
        let mut c = connect(t).await?;
        // A running write must not hold SET GLOBAL read_only for long.
        bounded(timeout, c.query_drop("SET SESSION lock_wait_timeout = 1")).await?;
        *conn = Some(c);
    }
    let c = conn.as_mut().expect("just opened");
    let value = u8::from(on);
    let statements: Vec<String> = if on {
        vec![
            format!("SET GLOBAL read_only = {value}"),
            format!("SET GLOBAL super_read_only = {value}"),
        ]
    } else {
        vec![
            format!("SET GLOBAL super_read_only = {value}"),
            format!("SET GLOBAL read_only = {value}"),
        ]
    };
    for s in statements {
        match bounded(timeout, c.query_drop(s.as_str())).await {
            Ok(()) => {}
            // MariaDB has no super_read_only (1193: unknown system variable).
            Err(Failure::Server(1193, _)) => {}
            Err(f) => {
                if f.drops_connection() {
                    *conn = None;
                }
                return Err(f);
            }
        }
    }
    Ok(())
}

/// The promotion policy's wait, at most `catch_up_timeout_ms`: with `peer_gtid` (what the
/// fenced peer wrote), until this server has applied it (MASTER_GTID_WAIT); otherwise until
/// the local relay log is applied. Logs which way it went.
async fn catch_up(t: &MysqlTarget, conn: &mut Option<Conn>, peer_gtid: Option<&str>) {
    // The default, whether or not replication health is tracked.
    let Some(limit) = t.catch_up_timeout_ms else {
        info!(target = %t.name, "takeover at once: writes enabled without waiting for the relay log");
        return;
    };
    let timeout = Duration::from_millis(t.timeout_ms);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(limit);
    loop {
        if conn.is_none() {
            *conn = connect(t).await.ok();
        }
        if let Some(c) = conn.as_mut() {
            match peer_gtid {
                Some(pos) => {
                    let own = scalar(c, timeout, "SELECT @@global.gtid_domain_id")
                        .await
                        .ok()
                        .flatten()
                        .unwrap_or_default();
                    let wanted = foreign_gtids(pos, &own);
                    if wanted.is_empty() {
                        return;
                    }
                    // Short slices: each call is bounded like any other.
                    let slice = (timeout.as_secs_f64() / 2.0).max(0.05);
                    let q = format!("SELECT MASTER_GTID_WAIT('{wanted}', {slice:.3})");
                    match scalar(c, timeout * 2, &q).await {
                        Ok(Some(r)) if r.trim() == "0" => {
                            info!(target = %t.name, gtid = %wanted, "the peer's writes are applied here: enabling writes");
                            return;
                        }
                        Ok(_) => {}
                        Err(f) if f.drops_connection() => *conn = None,
                        Err(_) => {}
                    }
                }
                None => {
                    let version = scalar(c, timeout, "SELECT VERSION()").await.ok().flatten();
                    let statement = replica_statement(version.as_deref().unwrap_or(""));
                    match replication(c, statement, timeout).await {
                        Ok(r) if !r.configured || r.caught_up => {
                            info!(target = %t.name, "relay log applied: enabling writes");
                            return;
                        }
                        Ok(_) => {}
                        // No right to read the replica status (SLAVE MONITOR / REPLICATION
                        // CLIENT): waiting would only delay every promotion by the limit.
                        Err(Failure::Server(code, message))
                            if matches!(code, 1227 | 1044 | 1045 | 1142) =>
                        {
                            warn!(target = %t.name, code, %message,
                                "cannot read the replica status to wait for the relay log: enabling writes without waiting (grant SLAVE MONITOR, or REPLICATION CLIENT on MySQL)");
                            return;
                        }
                        Err(f) if f.drops_connection() => *conn = None,
                        Err(_) => {}
                    }
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            warn!(target = %t.name, limit_ms = limit,
                "not caught up within the catch-up limit: enabling writes anyway");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peers_own_gtids_are_what_a_promotion_waits_for() {
        assert_eq!(foreign_gtids("1-1-4606,2-2-9", "1"), "2-2-9");
        assert_eq!(
            foreign_gtids("1-1-4606, 2-2-9,3-7-1", "2"),
            "1-1-4606,3-7-1"
        );
        assert_eq!(foreign_gtids("1-1-5", "1"), "");
        assert_eq!(foreign_gtids("", "1"), "");
    }

    #[test]
    fn the_replica_statement_follows_the_server() {
        assert_eq!(
            replica_statement("10.11.6-MariaDB-0+deb12u1-log"),
            "SHOW SLAVE STATUS"
        );
        assert_eq!(replica_statement("8.4.0"), "SHOW REPLICA STATUS");
        assert_eq!(replica_statement("8.0.22"), "SHOW REPLICA STATUS");
        assert_eq!(replica_statement("8.0.21"), "SHOW SLAVE STATUS");
        assert_eq!(replica_statement("5.7.44-log"), "SHOW SLAVE STATUS");
    }

    #[test]
    fn replication_health() {
        let good = Replication {
            configured: true,
            io_running: "Yes".into(),
            sql_running: true,
            seconds_behind: Some(2),
            caught_up: true,
            ..Replication::default()
        };
        assert_eq!(good.healthy(10), Ok(()));
        // The IO thread reconnecting (the peer is dead) is no reason to refuse the VIP.
        let peer_dead = Replication {
            io_running: "Connecting".into(),
            seconds_behind: None,
            ..good.clone()
        };
        assert_eq!(peer_dead.healthy(10), Ok(()));
        assert!(good.healthy(1).unwrap_err().contains("lagging 2 s"));
        let stopped = Replication {
            sql_running: false,
            last_sql_errno: 1062,
            last_sql_error: "Duplicate entry".into(),
            ..good.clone()
        };
        assert!(stopped.healthy(10).unwrap_err().contains("error 1062"));
        assert!(
            Replication::default()
                .healthy(10)
                .unwrap_err()
                .contains("not configured")
        );
    }

    #[test]
    fn failures_are_told_apart() {
        use mysql_async::{Error, IoError, ServerError};
        let server = |code| {
            Error::Server(ServerError {
                code,
                message: "m".into(),
                state: "28000".into(),
            })
        };
        assert!(matches!(classify(server(1045)), Failure::AuthFailed(_)));
        assert!(matches!(classify(server(1146)), Failure::Server(1146, _)));
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(
            classify(Error::Io(IoError::Io(refused))),
            Failure::NotRunning
        );
        assert!(!Failure::Check("x".into()).drops_connection());
        assert!(Failure::Timeout.drops_connection());
    }
}
