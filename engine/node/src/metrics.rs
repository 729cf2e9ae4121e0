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

/// A histogram whose buckets another component counts (the control plane's DHT lookups): the
/// latest snapshot, encoded as an OpenMetrics histogram.
#[derive(Debug, Default)]
struct Snapshot(Mutex<Counts>);

/// Sum, count, and (upper bound, count) per bucket.
type Counts = (f64, u64, Vec<(f64, u64)>);

/// The registry takes ownership of what it encodes; the scrape updates the same snapshot.
#[derive(Debug)]
struct SharedSnapshot(Arc<Snapshot>);

impl prometheus_client::encoding::EncodeMetric for SharedSnapshot {
    fn encode(&self, encoder: prometheus_client::encoding::MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Histogram
    }
}

impl prometheus_client::encoding::EncodeMetric for Snapshot {
    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder) -> Result<(), std::fmt::Error> {
        let Ok(s) = self.0.lock() else { return Ok(()) };
        // OpenMetrics requires the +Inf bucket even before anything was counted.
        let empty = [(f64::MAX, 0)];
        let buckets = if s.2.is_empty() { &empty[..] } else { &s.2[..] };
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(s.0, s.1, buckets, None)
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Histogram
    }
}

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
    /// The aggregator's QUIC ingest shards, when the node has that role.
    pub quic: Option<vain_transport::quic::Live>,
}

/// The node's metrics.
pub struct Metrics {
    registry: Registry,
    rounds: Family<Labels, Counter>,
    updates: Family<Labels, Counter>,
    suspects: Counter,
    round_duration: Histogram,
    round_overhead: Histogram,
    phases: Family<Labels, Histogram, fn() -> Histogram>,
    accuracy: Gauge<f64, AtomicU64>,
    ledger_epoch: Gauge,
    ledger_nodes: Family<Labels, Gauge>,
    evidence: Family<Labels, Counter>,
    peers: Gauge,
    peers_live: Gauge,
    refused: Family<Labels, Counter>,
    answers: Family<Labels, Counter>,
    anomaly_z: Histogram,
    epsilon: Gauge<f64, AtomicU64>,
    tiers: Family<Labels, Gauge>,
    proposals: Family<Labels, Gauge>,
    submits: Family<Labels, Counter>,
    ingest_bytes: Counter,
    ingest_updates: Family<Labels, Counter>,
    aggregation: Family<Labels, Histogram, fn() -> Histogram>,
    shard_cpu: Family<Labels, Counter<f64, AtomicU64>>,
    lookups: Family<Labels, Counter>,
    lookup_time: Arc<Snapshot>,
    quic: Family<Labels, Counter>,
    quic_open: Gauge,
    chain: Family<Labels, Counter>,
    chain_gas: Family<Labels, Counter>,
    /// Shard CPU seconds seen at the last scrape, by shard.
    shard_seen: Mutex<BTreeMap<String, f64>>,
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
            "From a round's open to its last update (or deadline)",
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
        let phases = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(|| {
            // 1 ms to about 4 min: a round's collection runs to its deadline.
            Histogram::new(exponential_buckets(0.001, 2.0, 19))
        });
        registry.register_with_unit(
            "round_phase_duration",
            "Time an aggregator's rounds spent in each phase: open (to every client's answer), collect (updates), \
             aggregate, close (aggregation, checkpoint, ledger, signed close journaled and sent)",
            Unit::Seconds,
            phases.clone(),
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
        let anomaly_z = Histogram::new([0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 10.0, 100.0]);
        registry.register(
            "round_anomaly_z",
            "Anomaly z of each client's update in each closed round",
            anomaly_z.clone(),
        );
        let epsilon = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "privacy_epsilon",
            "Privacy budget spent so far (RDP accountant, delta 1e-5; 0 without noise)",
            epsilon.clone(),
        );
        let tiers = Family::<Labels, Gauge>::default();
        registry.register("ledger_tier_nodes", "Nodes in the ledger, by tier", tiers.clone());
        let proposals = Family::<Labels, Gauge>::default();
        registry.register("governance_proposals", "Governance proposals the ledger holds, by state", proposals.clone());
        let chain = Family::<Labels, Counter>::default();
        registry.register(
            "chain_submissions",
            "Transactions this node sent to the chain, by call and outcome",
            chain.clone(),
        );
        let chain_gas = Family::<Labels, Counter>::default();
        registry.register("chain_gas", "Gas this node's mined transactions used, by call", chain_gas.clone());
        let submits = Family::<Labels, Counter>::default();
        registry.register("governance_submits", "Proposals and votes handed to this node, by outcome", submits.clone());
        let ingest_bytes = Counter::default();
        registry.register_with_unit(
            "ingest",
            "Payload bytes of the updates this aggregator accepted",
            Unit::Bytes,
            ingest_bytes.clone(),
        );
        let ingest_updates = Family::<Labels, Counter>::default();
        registry.register(
            "ingest_updates",
            "Updates this aggregator's ingest took or refused, by outcome (accepted, or the refusal's reason)",
            ingest_updates.clone(),
        );
        let aggregation = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register_with_unit(
            "aggregation",
            "Time a round's aggregation took (order statistics, clipping, noise, report), by rule and backend",
            Unit::Seconds,
            aggregation.clone(),
        );
        let shard_cpu = Family::<Labels, Counter<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "shard_cpu",
            "CPU time of each ingest shard thread",
            Unit::Seconds,
            shard_cpu.clone(),
        );
        let lookups = Family::<Labels, Counter>::default();
        registry.register("dht_lookups", "DHT lookups this node made, by outcome (ok, failed)", lookups.clone());
        let lookup_time = Arc::new(Snapshot::default());
        registry.register_with_unit(
            "dht_lookup_duration",
            "How long this node's DHT lookups took",
            Unit::Seconds,
            SharedSnapshot(lookup_time.clone()),
        );
        let quic = Family::<Labels, Counter>::default();
        registry.register(
            "quic_events",
            "The ingest's QUIC figures, by event (connections accepted, handshakes refused, connections capped, \
             datagrams received and sent, retries, bad frames, throttled streams, connection attempts over their \
             address's budget)",
            quic.clone(),
        );
        let quic_open = Gauge::default();
        registry.register("quic_connections_open", "QUIC ingest connections open", quic_open.clone());
        Metrics {
            registry,
            rounds,
            updates,
            suspects,
            round_duration,
            round_overhead,
            phases,
            accuracy,
            ledger_epoch,
            ledger_nodes,
            evidence,
            peers,
            peers_live,
            refused,
            answers,
            anomaly_z,
            epsilon,
            tiers,
            proposals,
            submits,
            chain,
            chain_gas,
            ingest_bytes,
            ingest_updates,
            aggregation,
            shard_cpu,
            lookups,
            lookup_time,
            quic,
            quic_open,
            shard_seen: Mutex::new(BTreeMap::new()),
            seen: Mutex::new(BTreeMap::new()),
        }
    }

    /// A transaction sent to the chain: its call, outcome (ok, already, reverted, failed) and
    /// the gas it used when mined.
    pub fn chain(&self, call: &str, outcome: &str, gas: u64) {
        self.chain.get_or_create(&vec![("call".into(), call.into()), ("outcome".into(), outcome.into())]).inc();
        if gas > 0 {
            self.chain_gas.get_or_create(&vec![("call".into(), call.into())]).inc_by(gas);
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
        let collect = row.open_ms.map(|o| (row.round_ms - o).max(0.0));
        for (phase, ms) in
            [("open", row.open_ms), ("collect", collect), ("aggregate", row.aggregate_ms), ("close", row.close_ms)]
        {
            if let Some(ms) = ms {
                self.phases.get_or_create(&label("phase", phase)).observe(ms / 1000.0);
            }
        }
        if row.accuracy.is_finite() {
            self.accuracy.set(row.accuracy);
        }
        for z in row.clients.iter().filter_map(|c| c.z).filter(|z| z.is_finite()) {
            self.anomaly_z.observe(z);
        }
        if let Some(e) = row.epsilon.filter(|e| e.is_finite()) {
            self.epsilon.set(e);
        }
        self.sample_shards();
        // What this node's own ingest and aggregation did (a followed round has no backend).
        if !row.backend.is_empty() {
            self.ingest_bytes.inc_by(row.ingest_bytes);
            self.ingest_updates.get_or_create(&label("outcome", "accepted")).inc_by(row.accepted as u64);
            for (reason, n) in &row.rejects {
                self.ingest_updates.get_or_create(&label("outcome", reason)).inc_by(*n);
            }
            if let Some(ms) = row.aggregate_ms {
                let labels = vec![("rule".to_string(), row.rule.clone()), ("backend".to_string(), row.backend.clone())];
                self.aggregation.get_or_create(&labels).observe(ms / 1000.0);
            }
        }
    }

    /// The ingest shards' CPU, from the kernel's per-thread accounting: sampled at every round
    /// and scrape (the shards live as long as the coordinator runs its rounds).
    fn sample_shards(&self) {
        let Ok(mut seen) = self.shard_seen.lock() else { return };
        // glommio names a shard's threads `vain-shard-<i>-<executor id>`: sum them by shard.
        let mut by_shard: BTreeMap<String, f64> = BTreeMap::new();
        for (name, secs) in vain_transport::proc::thread_cpu("vain-shard-") {
            let rest = name.trim_start_matches("vain-shard-");
            let shard = rest.split_once('-').map_or(rest, |(i, _)| i).to_string();
            *by_shard.entry(shard).or_default() += secs;
        }
        for (shard, secs) in by_shard {
            let last = seen.entry(shard.clone()).or_default();
            if secs > *last {
                self.shard_cpu.get_or_create(&label("shard", &shard)).inc_by(secs - *last);
                *last = secs;
            }
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
            let l = &st.lookups;
            self.advance(&self.lookups, "lookups", "outcome", "ok", l.ok);
            self.advance(&self.lookups, "lookups", "outcome", "failed", l.failed);
            if let Ok(mut snap) = self.lookup_time.0.lock() {
                let bounds = vain_net::node::LOOKUP_BUCKETS_MS.iter().map(|b| b / 1000.0).chain([f64::MAX]);
                let counts = l.buckets.iter().copied().chain(std::iter::repeat(0));
                *snap = (l.sum_ms / 1000.0, l.ok + l.failed, bounds.zip(counts).collect());
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
            let mut by_tier: BTreeMap<u8, i64> = (0..=4).map(|t| (t, 0)).collect();
            for n in &l.nodes {
                *by_tier.entry(n.tier).or_default() += 1;
            }
            for (tier, n) in by_tier {
                self.tiers.get_or_create(&label("tier", &tier.to_string())).set(n);
            }
            let mut by_state: BTreeMap<&str, i64> =
                ["pending", "open", "passed", "rejected", "no quorum"].into_iter().map(|s| (s, 0)).collect();
            for p in &l.proposals {
                *by_state.entry(p.state).or_default() += 1;
            }
            for (state, n) in by_state {
                self.proposals.get_or_create(&label("state", state)).set(n);
            }
            for (outcome, n) in &l.submits {
                self.advance(&self.submits, "submits", "outcome", outcome, *n);
            }
        }
        self.sample_shards();
        if let Some(live) = &s.quic {
            let t = vain_transport::quic::Stats::total(&live.snapshot());
            self.quic_open.set(t.open as i64);
            for (event, n) in [
                ("connection accepted", t.connections),
                ("handshake refused", t.refused),
                ("connection capped", t.capped),
                ("datagram received", t.datagrams),
                ("datagram sent", t.sent),
                ("retry", t.retries),
                ("bad frame", t.bad_frames),
                ("stream throttled", t.throttled),
                ("attempt over budget", t.shed),
            ] {
                self.advance(&self.quic, "quic", "event", event, n);
            }
        }
        if let Some(p) = &s.participant {
            for (answer, n) in p.counts() {
                self.advance(&self.answers, "answers", "answer", answer, n);
            }
        }
        self.encode()
    }

    /// The exposition of what is recorded now.
    fn encode(&self) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric the shipped Grafana dashboard queries is one the node exposes.
    #[test]
    fn the_grafana_dashboard_queries_only_exposed_metrics() {
        let exposed: std::collections::BTreeSet<String> = Metrics::new()
            .encode()
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect();
        assert!(
            exposed.contains("vain_round_anomaly_z") && exposed.contains("vain_governance_proposals"),
            "{exposed:?}"
        );
        let dash: serde_json::Value =
            serde_json::from_str(include_str!("../../../docs/grafana/vain-node.json")).expect("dashboard JSON");
        let panels = dash["panels"].as_array().expect("panels");
        assert!(panels.len() >= 12);
        let mut queried = 0;
        for p in panels {
            assert!(p["gridPos"]["w"].as_u64().is_some(), "{p}");
            for t in p["targets"].as_array().expect("targets") {
                let expr = t["expr"].as_str().expect("expr");
                for (at, _) in expr.match_indices("vain_") {
                    let name: String =
                        expr[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    let base = ["_bucket", "_count", "_sum", "_total"]
                        .iter()
                        .find_map(|s| name.strip_suffix(s))
                        .unwrap_or(&name)
                        .to_string();
                    assert!(
                        exposed.contains(&base),
                        "panel {:?} queries {name}, which the node does not expose",
                        p["title"]
                    );
                    queried += 1;
                }
            }
        }
        assert!(queried >= 16);
    }
}
