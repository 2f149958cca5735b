//! Hot reload: file-system events (debounced) and SIGHUP rebuild the whole snapshot off the
//! async threads; a good one is swapped in atomically, a bad one is logged and the old one kept.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::gateway::Gateway;
use crate::proxy::upstream::group::Group;
use crate::snapshot::{BuildMode, Snapshot};

/// Quiet time after the last relevant event before reloading: editors and `kubectl` write in
/// bursts.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// Longest wait between a relevant event and the reload it causes, however busy the folder is.
const MAX_DELAY: Duration = Duration::from_secs(1);

/// Rebuilds the snapshot from `config_path` and swaps it in; on failure the old one stays.
/// `started` is the config the process started with: restart-only keys that differ from it are
/// logged and reported by `/reload` while everything else applies.
pub async fn reload_now(config_path: &Path, gw: &Gateway, started: &Config) -> Result<(), String> {
    let path = config_path.to_owned();
    let previous = gw.current.load_full();
    let built = tokio::task::spawn_blocking(move || Snapshot::build_after(&path, BuildMode::Reload, Some(&previous)))
        .await
        .map_err(|e| format!("reload task failed: {e}"))?;
    match built {
        Ok(new) if new.config.tokens.issue_tokens != started.tokens.issue_tokens => {
            // Unlike the other restart-only keys this one shapes the snapshot itself (signing keys,
            // trusted issuers, endpoints): nothing of the edit is applied until a restart.
            let msg = format!(
                "tokens.issue_tokens changed to {} and applies only at a restart; the previous configuration keeps \
                 serving",
                new.config.tokens.issue_tokens
            );
            tracing::error!(error = %msg, "reload refused");
            gw.admin.reload_failed(msg.clone());
            Err(msg)
        }
        Ok(new) => {
            let restart_required = crate::config::restart::pending(started, &new.config);
            if !restart_required.is_empty() {
                tracing::warn!(
                    keys = %restart_required.join(", "),
                    "these settings changed but apply only at start; everything else was reloaded; restart to apply them"
                );
            }
            gw.metrics.declare_routes(new.config.routes.iter().map(|r| r.prefix.as_str()));
            // New or changed remote issuers start fetching; kept ones already run.
            new.trust.remotes().for_each(|r| r.start(&gw.metrics.jwks));
            // Resolving and probing start with the generation that serves (the old one's stop with it).
            new.groups.iter().for_each(Group::start);
            // After the swap: an instance that refetches at once must find the new keys served.
            let new = Arc::new(new);
            gw.current.store(new.clone());
            gw.key_news.published(&new);
            gw.admin.reload_succeeded(restart_required);
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

/// Which events matter: the files the snapshot reads, the `*.pem` files of a watched folder
/// (keys), and Kubernetes' `..data` symlink swaps in either. Anything else, such as a log file
/// written beside the config, is ignored before it reaches the debounce.
#[derive(Default)]
struct Interest {
    /// Files read by the snapshot (config, tables, JWKS, certificate, CAs).
    files: HashSet<PathBuf>,
    /// Folders whose `*.pem` files are read (the signing keys).
    dirs: HashSet<PathBuf>,
    /// Every folder to watch: `dirs` and the folders of `files` (where a `..data` swap counts).
    folders: HashSet<PathBuf>,
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
        let mut folders: HashSet<PathBuf> = files.iter().filter_map(|f| f.parent().map(Path::to_path_buf)).collect();
        folders.extend(dirs.iter().cloned());
        Interest { files, dirs, folders }
    }

    fn matches(&self, path: &Path) -> bool {
        let parent = path.parent();
        let k8s = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(".."));
        let pem = path.extension().is_some_and(|x| x == "pem");
        self.files.contains(path)
            || self.dirs.contains(path)
            || (pem && parent.is_some_and(|d| self.dirs.contains(d)))
            || (k8s && parent.is_some_and(|d| self.folders.contains(d)))
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// Waits until a burst of relevant events is over: `DEBOUNCE` without one, but never longer than
/// `MAX_DELAY` after the first. The channel only carries relevant events.
async fn settle(rx: &mut mpsc::Receiver<()>) {
    let deadline = Instant::now() + MAX_DELAY;
    loop {
        let quiet = (Instant::now() + DEBOUNCE).min(deadline);
        match tokio::time::timeout_at(quiet, rx.recv()).await {
            Ok(Some(())) if Instant::now() < deadline => continue,
            _ => return,
        }
    }
}

/// Watches the snapshot's files and SIGHUP until shutdown.
pub async fn run(config_path: PathBuf, gw: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    let started = gw.current.load().config.clone();
    // The watcher thread filters events itself, so a folder flooded with irrelevant writes can
    // neither delay a reload nor crowd relevant events out of the channel.
    let interest = Arc::new(ArcSwap::from_pointee(Interest::of(&gw.current.load())));
    let (tx, mut rx) = mpsc::channel::<()>(64);
    let filter = interest.clone();
    let mut watcher = match notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        // Reads (inotify's open/close-nowrite) change nothing: `tokengate mint` reading a key
        // must not trigger a reload.
        if let Some(ev) = ev.ok().filter(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
            let wanted = filter.load();
            if ev.paths.iter().any(|p| wanted.matches(p)) {
                let _ = tx.try_send(());
            }
        }
    }) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "file watching unavailable; reload with SIGHUP");
            None
        }
    };
    let mut watching: HashSet<PathBuf> = HashSet::new();
    let mut hup = hangup();
    loop {
        if let Some(w) = watcher.as_mut() {
            let want = interest.load().folders.clone();
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
            Some(()) = rx.recv() => settle(&mut rx).await,
        }
        let _ = reload_now(&config_path, &gw, &started).await;
        interest.store(Arc::new(Interest::of(&gw.current.load())));
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
