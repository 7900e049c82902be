//! `GET /metrics`: Prometheus text built at scrape time from the atomics the
//! request path bumps, so recording a request costs one atomic add and the
//! scrape pays for the rest.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::cluster::Cluster;
use crate::runtime::stats::LATENCY_BUCKETS;
use crate::runtime::{ServerStatus, Shared, Snapshot, clock};

/// The two formats a scrape may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0, for a scraper that asks for it (Prometheus does).
    OpenMetrics,
    /// Prometheus' text format 0.0.4: what anything else gets (curl, a
    /// parser of the classic format).
    Text,
}

impl Format {
    /// The format an `Accept` header asks for.
    pub fn accepted(accept: Option<&str>) -> Format {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

const SERVER_STATES: [ServerStatus; 7] = [
    ServerStatus::Up,
    ServerStatus::Down,
    ServerStatus::Unhealthy,
    ServerStatus::Failed,
    ServerStatus::Draining,
    ServerStatus::Drained,
    ServerStatus::Backup,
];

/// Every `sluice_*` metric, as of now, with `accepted` the connections
/// each worker has accepted, in `format`.
pub fn render(
    shared: &Shared,
    cluster: Option<&Cluster>,
    accepted: Vec<u64>,
    format: Format,
) -> String {
    let mut registry = Registry::with_prefix("sluice");
    registry.register_collector(Box::new(Scrape {
        snapshot: shared.load(),
        reloads: (shared.reloads_ok.get(), shared.reloads_failed.get()),
        cluster_connected: cluster.map(Cluster::is_connected),
        accepted,
    }));
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    match format {
        Format::OpenMetrics => text,
        Format::Text => classic(&text),
    }
}

/// OpenMetrics text made the classic text format: a counter's `HELP` and
/// `TYPE` name its samples' `_total` name, and there is no `# EOF` (or
/// `# UNIT`). Gauges and histograms read the same in both.
fn classic(openmetrics: &str) -> String {
    // `HELP` comes before `TYPE`: the counters are known first.
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let (name, tail) = line.strip_prefix(tag)?.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{tag}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// One scrape's view: the snapshot and the process-wide counters.
struct Scrape {
    snapshot: Arc<Snapshot>,
    reloads: (u64, u64),
    /// `None` without a `[cluster]`.
    cluster_connected: Option<bool>,
    /// Client connections accepted, by worker.
    accepted: Vec<u64>,
}

impl fmt::Debug for Scrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrape").finish_non_exhaustive()
    }
}

/// A label value as the text format wants it: `\`, `"` and line feeds
/// escaped. Names and addresses come from the config, which may hold any
/// of them (the encoder writes values as given).
fn label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Writes one metric family: a descriptor, then its series.
fn family<'a, L: EncodeLabelSet + 'a>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    series: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in series {
        let mut one = metric.encode_family(&labels)?;
        write_value(&mut one, kind, value)?;
    }
    Ok(())
}

fn write_value(metric: &mut MetricEncoder<'_>, kind: MetricType, value: u64) -> fmt::Result {
    match kind {
        MetricType::Counter => metric.encode_counter::<NoLabelSet, _, u64>(&value, None),
        _ => metric.encode_gauge(&value),
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let now = clock::now_ms();
        let upstreams = &self.snapshot.upstreams;
        let servers = || {
            upstreams
                .iter()
                .flat_map(|u| u.servers.iter().map(move |s| (u, s)))
        };

        family(
            &mut encoder,
            "requests",
            "Responses sent to clients, by listener and status class.",
            MetricType::Counter,
            self.snapshot.listeners.iter().flat_map(|l| {
                let counts = l.responses.read();
                STATUS_CLASSES.iter().zip(counts).map(move |(class, n)| {
                    (
                        [("listener", label(&l.name)), ("code", (*class).to_owned())],
                        n,
                    )
                })
            }),
        )?;
        family(
            &mut encoder,
            "upstream_responses",
            "Responses received from servers, by upstream, server and status class.",
            MetricType::Counter,
            servers().flat_map(|(u, s)| {
                let counts = s.state.responses.read();
                STATUS_CLASSES.iter().zip(counts).map(move |(class, n)| {
                    (
                        [
                            ("upstream", label(&u.name)),
                            ("server", label(&s.cfg.address)),
                            ("code", (*class).to_owned()),
                        ],
                        n,
                    )
                })
            }),
        )?;
        let server_labels = |u: &crate::runtime::UpstreamRt, s: &crate::runtime::ServerRt| {
            [
                ("upstream", label(&u.name)),
                ("server", label(&s.cfg.address)),
            ]
        };
        family(
            &mut encoder,
            "server_attempts",
            "Attempts sent to each server (retries count once per server tried).",
            MetricType::Counter,
            servers().map(|(u, s)| (server_labels(u, s), s.state.requests())),
        )?;
        family(
            &mut encoder,
            "server_failures",
            "Passive failures counted against each server.",
            MetricType::Counter,
            servers().map(|(u, s)| (server_labels(u, s), s.state.failures())),
        )?;
        family(
            &mut encoder,
            "server_in_flight",
            "Requests in flight to each server, until their response body ends.",
            MetricType::Gauge,
            servers().map(|(u, s)| (server_labels(u, s), u64::from(s.state.in_flight()))),
        )?;
        family(
            &mut encoder,
            "server_tunnels",
            "Upgrade tunnels (WebSocket and others) open to each server.",
            MetricType::Gauge,
            servers().map(|(u, s)| (server_labels(u, s), u64::from(s.state.tunnels()))),
        )?;
        family(
            &mut encoder,
            "server_tunnels_closed",
            "Tunnels sluice closed at a drain deadline or at shutdown, by the Close code sent to the client (none: not a WebSocket).",
            MetricType::Counter,
            servers().flat_map(|(u, s)| {
                s.state
                    .closed_tunnels()
                    .into_iter()
                    .map(move |((cause, code), n)| {
                        (
                            [
                                ("upstream", label(&u.name)),
                                ("server", label(&s.cfg.address)),
                                ("cause", cause.as_str().to_owned()),
                                (
                                    "code",
                                    code.map_or_else(|| "none".to_owned(), |c| c.to_string()),
                                ),
                            ],
                            n,
                        )
                    })
            }),
        )?;
        family(
            &mut encoder,
            "server_state",
            "The state of each server: 1 for its current state, 0 for the others.",
            MetricType::Gauge,
            servers().flat_map(|(u, s)| {
                let current = s.status(now);
                SERVER_STATES.iter().map(move |state| {
                    (
                        [
                            ("upstream", label(&u.name)),
                            ("server", label(&s.cfg.address)),
                            ("state", state.as_str().to_owned()),
                        ],
                        u64::from(*state == current),
                    )
                })
            }),
        )?;
        family(
            &mut encoder,
            "server_bound_requests",
            "Requests that reached a server because a sticky cookie bound them to it.",
            MetricType::Counter,
            servers().map(|(u, s)| (server_labels(u, s), s.state.bound_requests())),
        )?;
        family(
            &mut encoder,
            "health_checks",
            "Active health check results, by server and result.",
            MetricType::Counter,
            servers().flat_map(|(u, s)| {
                [
                    ("pass", s.state.checks_passed.get()),
                    ("fail", s.state.checks_failed.get()),
                ]
                .map(|(result, n)| {
                    (
                        [
                            ("upstream", label(&u.name)),
                            ("server", label(&s.cfg.address)),
                            ("result", result.to_owned()),
                        ],
                        n,
                    )
                })
            }),
        )?;
        let upstream_label = |u: &crate::runtime::UpstreamRt| [("upstream", label(&u.name))];
        family(
            &mut encoder,
            "retries",
            "Requests sent again to another server after a failed attempt.",
            MetricType::Counter,
            upstreams
                .iter()
                .map(|u| (upstream_label(u), u.state.retries.get())),
        )?;
        family(
            &mut encoder,
            "retries_refused",
            "Retries not made because the upstream's retry budget was spent.",
            MetricType::Counter,
            upstreams
                .iter()
                .map(|u| (upstream_label(u), u.state.retries_refused.get())),
        )?;
        family(
            &mut encoder,
            "sticky_honoured",
            "Requests served by the server their sticky cookie named.",
            MetricType::Counter,
            upstreams
                .iter()
                .map(|u| (upstream_label(u), u.state.sticky_honoured.get())),
        )?;
        family(
            &mut encoder,
            "sticky_reissued",
            "Sticky cookies rewritten because their value was invalid or its server unavailable.",
            MetricType::Counter,
            upstreams
                .iter()
                .map(|u| (upstream_label(u), u.state.sticky_reissued.get())),
        )?;
        family(
            &mut encoder,
            "config_reloads",
            "Configuration reloads, by result.",
            MetricType::Counter,
            [
                ([("result", "ok")], self.reloads.0),
                ([("result", "failed")], self.reloads.1),
            ],
        )?;
        family(
            &mut encoder,
            "worker_connections",
            "Client connections accepted, by worker.",
            MetricType::Counter,
            self.accepted
                .iter()
                .enumerate()
                .map(|(worker, &n)| ([("worker", worker.to_string())], n)),
        )?;
        if let Some(connected) = self.cluster_connected {
            encoder
                .encode_descriptor(
                    "cluster_connected",
                    "1 while this instance reaches the cluster's Redis.",
                    None,
                    MetricType::Gauge,
                )?
                .encode_gauge(&u64::from(connected))?;
            family(
                &mut encoder,
                "server_cluster_in_flight",
                "Requests in flight to each server on every live instance of the cluster.",
                MetricType::Gauge,
                servers().map(|(u, s)| {
                    let counts = s.state.cluster_counts();
                    (server_labels(u, s), u64::from(counts.in_flight))
                }),
            )?;
        }

        let mut latency = encoder.encode_descriptor(
            "request_duration_seconds",
            "Time from the request to its response head (or error), per upstream.",
            None,
            MetricType::Histogram,
        )?;
        for u in upstreams {
            let (counts, sum, count) = u.state.latency.read();
            let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
                .iter()
                .copied()
                .chain([f64::MAX])
                .zip(counts)
                .collect();
            latency
                .encode_family(&upstream_label(u))?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        Ok(())
    }
}
