//! A node's Prometheus metrics (`vain node --metrics ADDR`): OpenMetrics text at `/metrics`.
//!
//! Round figures are recorded as each round is evaluated; the ledger, the control plane and the
//! client's answers are read when the endpoint is scraped (their totals become counter
//! increments, so the counters stay monotonic).

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use vain_round::coordinator::Row;

type Labels = Vec<(String, String)>;

fn label(k: &str, v: &str) -> Labels {
    vec![(k.to_string(), v.to_string())]
}

/// What a scrape reads from the node's planes.
pub struct Sources {
    /// The control plane.
    pub net: vain_net::node::Handle,
    /// The live ledger.
    pub ledger: Arc<Mutex<vain_trust::Live>>,
    /// The client, when the node has that role.
    pub participant: Option<vain_round::participant::Participant>,
}

/// The node's metrics.
pub struct Metrics {
    registry: Registry,
    rounds: Family<Labels, Counter>,
    updates: Family<Labels, Counter>,
    suspects: Counter,
    round_duration: Histogram,
    round_overhead: Histogram,
    accuracy: Gauge<f64, AtomicU64>,
    ledger_epoch: Gauge,
    ledger_nodes: Family<Labels, Gauge>,
    evidence: Family<Labels, Counter>,
    peers: Gauge,
    peers_live: Gauge,
    refused: Family<Labels, Counter>,
    answers: Family<Labels, Counter>,
    /// Totals seen at the last scrape, per counter and label, to add only the difference.
    seen: Mutex<BTreeMap<(String, String), u64>>,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("vain");
        let rounds = Family::<Labels, Counter>::default();
        registry.register("rounds", "Rounds this node closed, by outcome", rounds.clone());
        let updates = Family::<Labels, Counter>::default();
        registry.register(
            "round_updates",
            "Participants' updates in closed rounds, by status (accepted, rejected, missing)",
            updates.clone(),
        );
        let suspects = Counter::default();
        registry.register(
            "round_suspects",
            "Updates whose anomaly z reached the suspicion threshold",
            suspects.clone(),
        );
        let round_duration = Histogram::new(exponential_buckets(0.05, 2.0, 12));
        registry.register_with_unit(
            "round_duration",
            "From a round's open to its close",
            Unit::Seconds,
            round_duration.clone(),
        );
        let round_overhead = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register_with_unit(
            "round_overhead",
            "From a round's last update to the next open acknowledged by every participant",
            Unit::Seconds,
            round_overhead.clone(),
        );
        let accuracy = Gauge::<f64, AtomicU64>::default();
        registry.register("model_accuracy_ratio", "Accuracy of the last evaluated checkpoint", accuracy.clone());
        let ledger_epoch = Gauge::default();
        registry.register("ledger_epoch", "The next epoch of evidence the ledger will apply", ledger_epoch.clone());
        let ledger_nodes = Family::<Labels, Gauge>::default();
        registry.register("ledger_nodes", "Nodes in the ledger, by standing", ledger_nodes.clone());
        let evidence = Family::<Labels, Counter>::default();
        registry.register("ledger_evidence", "Evidence reports offered to the ledger, by outcome", evidence.clone());
        let peers = Gauge::default();
        registry.register("peers_connected", "Connected control-plane peers", peers.clone());
        let peers_live = Gauge::default();
        registry.register("peers_live", "Peers that answered a heartbeat within the stale timeout", peers_live.clone());
        let refused = Family::<Labels, Counter>::default();
        registry.register("control_refused", "Control-plane refusals, by reason", refused.clone());
        let answers = Family::<Labels, Counter>::default();
        registry.register("client_answers", "The client's answers to round messages, by answer", answers.clone());
        Metrics {
            registry,
            rounds,
            updates,
            suspects,
            round_duration,
            round_overhead,
            accuracy,
            ledger_epoch,
            ledger_nodes,
            evidence,
            peers,
            peers_live,
            refused,
            answers,
            seen: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records an evaluated round.
    pub fn round(&self, row: &Row) {
        self.rounds.get_or_create(&label("outcome", row.outcome)).inc();
        for (status, n) in [("accepted", row.accepted), ("rejected", row.rejected), ("missing", row.missing)] {
            self.updates.get_or_create(&label("status", status)).inc_by(n as u64);
        }
        self.suspects.inc_by(row.suspects.len() as u64);
        if row.round_ms > 0.0 {
            self.round_duration.observe(row.round_ms / 1000.0);
        }
        if let Some(o) = row.overhead_ms {
            self.round_overhead.observe(o / 1000.0);
        }
        if row.accuracy.is_finite() {
            self.accuracy.set(row.accuracy);
        }
    }

    /// Adds to `family{key=value}` what `total` grew by since the last scrape.
    fn advance(&self, family: &Family<Labels, Counter>, name: &str, key: &str, value: &str, total: u64) {
        let Ok(mut seen) = self.seen.lock() else { return };
        let last = seen.entry((name.to_string(), value.to_string())).or_default();
        if total > *last {
            family.get_or_create(&label(key, value)).inc_by(total - *last);
            *last = total;
        }
    }

    /// Reads the planes and encodes every metric.
    pub async fn scrape(&self, s: &Sources) -> String {
        if let Ok(st) = s.net.status().await {
            self.peers.set(st.connected as i64);
            self.peers_live.set(st.live as i64);
            for (reason, n) in &st.rejected {
                self.advance(&self.refused, "refused", "reason", reason, *n);
            }
        }
        let ledger = s.ledger.lock().map(|l| l.status()).ok();
        if let Some(l) = ledger {
            self.ledger_epoch.set(l.next_epoch as i64);
            let mut by: BTreeMap<&str, i64> = BTreeMap::from([("active", 0), ("suspended", 0), ("banned", 0)]);
            for n in &l.nodes {
                *by.entry(n.standing).or_default() += 1;
            }
            for (standing, n) in by {
                self.ledger_nodes.get_or_create(&label("standing", standing)).set(n);
            }
            for (outcome, n) in &l.offers {
                self.advance(&self.evidence, "evidence", "outcome", outcome, *n);
            }
        }
        if let Some(p) = &s.participant {
            for (answer, n) in p.counts() {
                self.advance(&self.answers, "answers", "answer", answer, n);
            }
        }
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The exposition's content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `/metrics` on `addr` until the process ends.
pub async fn serve(addr: std::net::SocketAddr, metrics: Arc<Metrics>, sources: Arc<Sources>) -> std::io::Result<()> {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let (m, s) = (metrics.clone(), sources.clone());
            async move {
                let body = m.scrape(&s).await;
                ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "metrics listening");
    axum::serve(listener, app).await
}
