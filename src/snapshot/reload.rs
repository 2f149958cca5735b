//! Hot reload: file-system events (debounced) and SIGHUP rebuild the whole snapshot off the
//! async threads; a good one is swapped in atomically, a bad one is logged and the old one kept.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::gateway::Gateway;
use crate::snapshot::{BuildMode, Snapshot};

/// Quiet time after the last event before reloading: editors and `kubectl` write in bursts.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Rebuilds the snapshot from `config_path` and swaps it in; on failure the old one stays.
pub async fn reload_now(config_path: &Path, gw: &Gateway) -> Result<(), String> {
    let path = config_path.to_owned();
    let previous = gw.current.load_full();
    let built = tokio::task::spawn_blocking(move || Snapshot::build_after(&path, BuildMode::Reload, Some(&previous)))
        .await
        .map_err(|e| format!("reload task failed: {e}"))?;
    match built {
        Ok(new) => {
            let old = gw.current.load();
            let (o, n) = (&old.config, &new.config);
            if o.server.listen != n.server.listen
                || o.server.listen_plain != n.server.listen_plain
                || o.admin.listen != n.admin.listen
            {
                tracing::warn!("listen addresses changed: they take effect after a restart");
            }
            gw.current.store(Arc::new(new));
            gw.admin.reload_succeeded();
            tracing::info!(generation = gw.admin.reload_status().generation, "configuration reloaded");
            Ok(())
        }
        Err(e) => {
            let msg = e.to_string();
            tracing::error!(error = %msg, "reload refused; the previous configuration keeps serving");
            gw.admin.reload_failed(msg.clone());
            Err(msg)
        }
    }
}

/// Which events matter: the watched files themselves, anything in a watched folder (keys), and
/// Kubernetes' `..data` symlink swaps.
struct Interest {
    files: HashSet<PathBuf>,
    dirs: HashSet<PathBuf>,
}

impl Interest {
    fn of(snap: &Snapshot) -> Interest {
        let mut files = HashSet::new();
        let mut dirs = HashSet::new();
        for p in &snap.watched {
            let p = absolute(p);
            if p.is_dir() {
                dirs.insert(p);
            } else {
                files.insert(p);
            }
        }
        Interest { files, dirs }
    }

    fn parents(&self) -> HashSet<PathBuf> {
        let mut out: HashSet<PathBuf> = self.files.iter().filter_map(|f| f.parent().map(Path::to_path_buf)).collect();
        out.extend(self.dirs.iter().cloned());
        out
    }

    fn matches(&self, path: &Path) -> bool {
        let k8s = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(".."));
        self.files.contains(path)
            || path.parent().is_some_and(|d| self.dirs.contains(d))
            || self.dirs.contains(path)
            || k8s
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// Watches the snapshot's files and SIGHUP until shutdown.
pub async fn run(config_path: PathBuf, gw: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    let (tx, mut rx) = mpsc::channel::<PathBuf>(256);
    let mut watcher = match notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        // Reads (inotify's open/close-nowrite) change nothing: `tokengate mint` reading a key
        // must not trigger a reload.
        if let Some(ev) = ev.ok().filter(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
            for p in ev.paths {
                let _ = tx.try_send(p);
            }
        }
    }) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "file watching unavailable; reload with SIGHUP");
            None
        }
    };
    let mut interest = Interest::of(&gw.current.load());
    let mut watching: HashSet<PathBuf> = HashSet::new();
    let mut hup = hangup();
    loop {
        if let Some(w) = watcher.as_mut() {
            let want = interest.parents();
            for d in want.difference(&watching) {
                if let Err(e) = w.watch(d, RecursiveMode::NonRecursive) {
                    tracing::warn!(dir = %d.display(), error = %e, "cannot watch");
                }
            }
            for d in watching.difference(&want) {
                let _ = w.unwatch(d);
            }
            watching = want;
        }
        tokio::select! {
            _ = crate::signals::stopped(&mut shutdown) => return,
            _ = recv_hup(&mut hup) => tracing::info!("SIGHUP: reloading"),
            Some(p) = rx.recv() => {
                if !interest.matches(&p) {
                    continue;
                }
                // Debounce: wait until the burst of events is over.
                while let Ok(Some(_)) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
            }
        }
        let _ = reload_now(&config_path, &gw).await;
        interest = Interest::of(&gw.current.load());
    }
}

#[cfg(unix)]
type Hup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hup = Option<()>;

fn hangup() -> Hup {
    #[cfg(unix)]
    {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
    }
    #[cfg(not(unix))]
    None
}

async fn recv_hup(h: &mut Hup) {
    #[cfg(unix)]
    if let Some(s) = h.as_mut() {
        s.recv().await;
        return;
    }
    let _ = h;
    std::future::pending::<()>().await
}
