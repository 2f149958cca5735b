//! Prometheus series of the remote key sets (`auth::remote`), one set of series per remote issuer
//! (label values come from the config, so they stay bounded).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of the per-issuer gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerLabels {
    /// The issuer's `iss`, as configured.
    issuer: String,
}

/// Labels of `tokengate_jwks_fetches_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FetchLabels {
    issuer: String,
    /// `ok` or `error`.
    result: &'static str,
}

/// Labels of `tokengate_jwks_refetches_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefetchLabels {
    issuer: String,
    /// `triggered` (an unknown kid started a fetch), `rate_limited` (too soon after the last), or
    /// `announced` (the issuer announced a new key set).
    outcome: &'static str,
}

/// Labels of `tokengate_key_announcements_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnnouncementLabels {
    /// `sent`, `send_failed` (retried), `received` (a trusted issuer's: refetched) or `ignored`
    /// (an issuer not trusted by URL here, or our own).
    event: &'static str,
}

/// The remote key sets' series; cloning shares them (the families are reference-counted).
#[derive(Clone, Default)]
pub struct JwksMetrics {
    /// Fetch attempts by result.
    fetches: Family<FetchLabels, Counter>,
    /// Unix time of the last successful fetch (0: none yet), for "keys older than" alerts.
    last_success: Family<IssuerLabels, Gauge>,
    /// Keys (distinct kids) held now; 0 means every token of that issuer is refused.
    keys: Family<IssuerLabels, Gauge>,
    /// Refetches out of schedule: an unknown kid's, triggered or refused by
    /// `jwks_refetch_min_secs`, or an announcement's.
    refetches: Family<RefetchLabels, Counter>,
    /// Key announcements on the shared store, sent and received.
    announcements: Family<AnnouncementLabels, Counter>,
}

impl JwksMetrics {
    /// Registers every series under `tokengate_jwks_*`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "tokengate_jwks_fetches",
            "Remote JWKS fetch attempts by issuer and result",
            self.fetches.clone(),
        );
        registry.register(
            "tokengate_jwks_last_success_timestamp_seconds",
            "Unix time of the last successful JWKS fetch by issuer (0: none yet)",
            self.last_success.clone(),
        );
        registry.register(
            "tokengate_jwks_keys",
            "Keys held by remote issuer (0: its tokens are refused)",
            self.keys.clone(),
        );
        registry.register(
            "tokengate_jwks_refetches",
            "Refetches out of schedule by issuer: an unknown kid's (triggered, or rate_limited as too soon after \
             the last fetch), or a key announcement's (announced)",
            self.refetches.clone(),
        );
        registry.register(
            "tokengate_key_announcements",
            "Key set announcements on the shared state store: sent, send_failed, received, ignored",
            self.announcements.clone(),
        );
        for event in ["sent", "send_failed", "received", "ignored"] {
            let _ = self.announcements.get_or_create(&AnnouncementLabels { event });
        }
    }

    /// Lists an issuer's series at zero, so dashboards and alerts see it before anything happens.
    pub fn declare(&self, issuer: &str) {
        let issuer = issuer.to_owned();
        for result in ["ok", "error"] {
            let _ = self.fetches.get_or_create(&FetchLabels { issuer: issuer.clone(), result });
        }
        for outcome in ["triggered", "rate_limited", "announced"] {
            let _ = self.refetches.get_or_create(&RefetchLabels { issuer: issuer.clone(), outcome });
        }
        let _ = self.last_success.get_or_create(&IssuerLabels { issuer: issuer.clone() });
        let _ = self.keys.get_or_create(&IssuerLabels { issuer });
    }

    /// One fetch attempt ended; `keys` is what the issuer holds after it.
    pub fn fetched(&self, issuer: &str, ok: bool, keys: usize, now_unix: u64) {
        let result = if ok { "ok" } else { "error" };
        self.fetches.get_or_create(&FetchLabels { issuer: issuer.to_owned(), result }).inc();
        let labels = IssuerLabels { issuer: issuer.to_owned() };
        if ok {
            self.last_success.get_or_create(&labels).set(now_unix as i64);
        }
        self.keys.get_or_create(&labels).set(keys as i64);
    }

    /// An announcement started a refetch.
    pub fn refetch_announced(&self, issuer: &str) {
        self.refetches.get_or_create(&RefetchLabels { issuer: issuer.to_owned(), outcome: "announced" }).inc();
    }

    /// A key announcement was sent, failed to be sent, or received (`event`, as labelled).
    pub fn announcement(&self, event: &'static str) {
        self.announcements.get_or_create(&AnnouncementLabels { event }).inc();
    }

    /// An unknown kid asked for a refetch; `triggered` false when rate-limited.
    pub fn refetch(&self, issuer: &str, triggered: bool) {
        let outcome = if triggered { "triggered" } else { "rate_limited" };
        self.refetches.get_or_create(&RefetchLabels { issuer: issuer.to_owned(), outcome }).inc();
    }
}
