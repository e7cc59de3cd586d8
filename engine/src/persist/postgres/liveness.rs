//! Which engine processes are alive, and the notifications between them.
//!
//! Each store registers its process in `engine_processes` on a connection of its own (not
//! from the pool) that holds a session advisory lock `(NAMESPACE, lock_key)` for as long
//! as the process lives. Every [`TICK`] the process refreshes its heartbeat and removes
//! the processes that are gone: those whose lock is not held (the server drops a session's
//! locks when its connection closes, so a process killed with SIGKILL is noticed within a
//! tick) and those whose heartbeat is older than the lease (a process that hangs, or is cut
//! off from the database). Whatever a removed process had claimed is free again. A process
//! that finds its own row removed is fenced: it must stop (see [`super::PgStore::fence`]).
//!
//! The same connection `LISTEN`s on channel `caseflow`; payloads are `<schema>:<what>`:
//! `work` (an inbox entry, a case event or a parked run is waiting) and `key` (a
//! concurrency key was released).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;

use super::{describe, Target};

/// The advisory lock namespace (classid) of process locks: "CFLW".
pub(crate) const NAMESPACE: i32 = 0x4346_4c57;
/// How often a process refreshes its heartbeat and looks for dead ones.
pub(crate) const TICK: Duration = Duration::from_millis(500);

/// This process, as the store's other parts see it.
pub(crate) struct Liveness {
    /// The row id in `engine_processes`.
    pub(crate) id: String,
    fenced: AtomicBool,
    /// Notified on `work` notifications and when a dead process was removed.
    pub(crate) work: Arc<Notify>,
    /// Notified when a concurrency key was released.
    pub(crate) keys: Notify,
    /// Stops the background task when the store goes.
    stop: tokio_util::sync::CancellationToken,
}

impl Drop for Liveness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Liveness {
    pub(crate) fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::SeqCst)
    }

    pub(crate) fn set_fenced(&self) {
        if !self.fenced.swap(true, Ordering::SeqCst) {
            tracing::error!(process = %self.id, "this process was declared dead by another engine process; its work was taken over");
            // The worker wakes, finds the store refusing, and stops.
            self.work.notify_one();
        }
    }

    /// Registers this process and starts its heartbeat.
    pub(crate) async fn start(target: &Target, lease: Duration) -> Result<Arc<Self>, String> {
        let id = format!(
            "{}-{}-{:016x}",
            hostname(),
            std::process::id(),
            rand::random::<u64>()
        );
        let me = Arc::new(Liveness {
            id,
            fenced: AtomicBool::new(false),
            work: Arc::new(Notify::new()),
            keys: Notify::new(),
            stop: tokio_util::sync::CancellationToken::new(),
        });
        let (client, messages) = register(target, &me, true).await?;
        // Processes that died before this one started (a restart after a crash) are
        // removed now, so their runs can be resumed at once.
        reap(&client, &me.id, lease)
            .await
            .map_err(|e| describe(&e))?;
        let session = Session {
            target_config: target.config.clone(),
            tls: target.tls.clone(),
            schema: target.schema.clone(),
            lease,
        };
        // The task holds only a weak reference: the store's drop ends it.
        let weak = Arc::downgrade(&me);
        let stop = me.stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = session.run(weak, client, messages) => {}
            }
        });
        Ok(me)
    }
}

struct Session {
    target_config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    schema: String,
    lease: Duration,
}

type Messages = tokio::sync::mpsc::UnboundedReceiver<String>;

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".into())
}

/// Connects the liveness session: takes a free process lock, registers (`first`) or
/// checks that the row is still there (after a reconnect), and listens.
async fn register(
    target: &Target,
    me: &Liveness,
    first: bool,
) -> Result<(tokio_postgres::Client, Messages), String> {
    connect_session(&target.config, &target.tls, &target.schema, me, first).await
}

async fn connect_session(
    config: &tokio_postgres::Config,
    tls: &tokio_postgres_rustls::MakeRustlsConnect,
    schema: &str,
    me: &Liveness,
    first: bool,
) -> Result<(tokio_postgres::Client, Messages), String> {
    let (client, mut conn) = config
        .connect(tls.clone())
        .await
        .map_err(|e| format!("cannot connect: {}", describe(&e)))?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let prefix = format!("{schema}:");
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(msg) = stream.next().await {
            match msg {
                Ok(AsyncMessage::Notification(n)) => {
                    if let Some(what) = n.payload().strip_prefix(&prefix) {
                        if tx.send(what.to_string()).is_err() {
                            break;
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "liveness connection closed");
                    break;
                }
            }
        }
    });
    // A lock key no other session holds right now (they are shared by the whole server).
    let mut key = None;
    for _ in 0..64 {
        let candidate = (rand::random::<u32>() >> 1) as i32;
        let got: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, $2)",
                &[&NAMESPACE, &candidate],
            )
            .await
            .map_err(|e| describe(&e))?
            .get(0);
        if got {
            key = Some(candidate);
            break;
        }
    }
    let key = key.ok_or("no free process lock key")?;
    let pid = std::process::id() as i32;
    if first {
        client
            .execute(
                "INSERT INTO engine_processes (id, lock_key, host, pid) VALUES ($1, $2, $3, $4)",
                &[&me.id, &key, &hostname(), &pid],
            )
            .await
            .map_err(|e| describe(&e))?;
    } else {
        let n = client
            .execute(
                "UPDATE engine_processes SET lock_key = $2, heartbeat_at = now() WHERE id = $1",
                &[&me.id, &key],
            )
            .await
            .map_err(|e| describe(&e))?;
        if n == 0 {
            me.set_fenced();
            return Err("this process was declared dead while disconnected".into());
        }
    }
    client
        .batch_execute("LISTEN caseflow")
        .await
        .map_err(|e| describe(&e))?;
    Ok((client, rx))
}

impl Session {
    async fn run(
        self,
        me: std::sync::Weak<Liveness>,
        mut client: tokio_postgres::Client,
        mut messages: Messages,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = messages.recv() => {
                    let Some(me) = me.upgrade() else { return };
                    match msg.as_deref() {
                        Some("work") => me.work.notify_one(),
                        Some("key") => me.keys.notify_waiters(),
                        Some(_) => {}
                        None => {
                            // The connection is gone: reconnect (the lock went with it).
                            tracing::warn!("lost the database connection that keeps this process registered; reconnecting");
                            match self.reconnect(&me).await {
                                Some((c, m)) => { client = c; messages = m; }
                                None => return,
                            }
                        }
                    }
                }
                _ = tick.tick() => {
                    let Some(me) = me.upgrade() else { return };
                    if me.is_fenced() {
                        return;
                    }
                    match self.beat(&client, &me).await {
                        Ok(true) => {}
                        Ok(false) => { me.set_fenced(); return; }
                        Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                    }
                }
            }
        }
    }

    async fn reconnect(&self, me: &Liveness) -> Option<(tokio_postgres::Client, Messages)> {
        loop {
            match connect_session(&self.target_config, &self.tls, &self.schema, me, false).await {
                Ok(s) => return Some(s),
                Err(_) if me.is_fenced() => return None,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot re-register this process yet");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Refreshes the heartbeat and removes dead processes; false when this process's own
    /// row is gone.
    async fn beat(&self, client: &tokio_postgres::Client, me: &Liveness) -> Result<bool, String> {
        let n = client
            .execute(
                "UPDATE engine_processes SET heartbeat_at = now() WHERE id = $1",
                &[&me.id],
            )
            .await
            .map_err(|e| describe(&e))?;
        if n == 0 {
            return Ok(false);
        }
        let removed = reap(client, &me.id, self.lease)
            .await
            .map_err(|e| describe(&e))?;
        if !removed.is_empty() {
            tracing::warn!(processes = ?removed, "engine processes gone; their work is taken over");
            me.work.notify_one();
            me.keys.notify_waiters();
        }
        Ok(true)
    }
}

/// Removes the processes that lost their lock or whose heartbeat is older than `lease`;
/// returns their ids.
pub(crate) async fn reap(
    client: &tokio_postgres::Client,
    me: &str,
    lease: Duration,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let secs = lease.as_secs_f64();
    let rows = client
        .query(
            "DELETE FROM engine_processes p
             WHERE p.id <> $1
               AND (p.heartbeat_at < now() - make_interval(secs => $2)
                    OR NOT EXISTS (
                        SELECT 1 FROM pg_locks l
                        WHERE l.locktype = 'advisory' AND l.granted
                          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                          AND l.classid = 1128680535::oid
                          AND l.objid = p.lock_key::oid
                          AND l.objsubid = 2))
             RETURNING p.id",
            &[&me, &secs],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
