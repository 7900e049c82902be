//! What a new config changes: listeners, upstreams and servers added,
//! removed and changed, and the settings that need a restart. The report is
//! logged and is the body of a successful `POST /api/reload`.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::config::{self, Config};

/// Names added, removed and changed between two configs.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl Changes {
    /// Compares two keyed lists; a key present in both whose value differs
    /// is changed.
    fn between<T: PartialEq>(old: &[(String, T)], new: &[(String, T)]) -> Changes {
        let find = |list: &[(String, T)], key: &str| list.iter().position(|(k, _)| k == key);
        Changes {
            added: new
                .iter()
                .filter(|(k, _)| find(old, k).is_none())
                .map(|(k, _)| k.clone())
                .collect(),
            removed: old
                .iter()
                .filter(|(k, _)| find(new, k).is_none())
                .map(|(k, _)| k.clone())
                .collect(),
            changed: new
                .iter()
                .filter(|(k, v)| find(old, k).is_some_and(|i| old[i].1 != *v))
                .map(|(k, _)| k.clone())
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (sign, names) in [
            ("+", &self.added),
            ("-", &self.removed),
            ("~", &self.changed),
        ] {
            if names.is_empty() {
                continue;
            }
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{sign}[{}]", names.join(", "))?;
        }
        Ok(())
    }
}

/// What a successful reload changed: the body of `POST /api/reload`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ReloadReport {
    /// By `listen` address, each listener's identity across reloads.
    pub listeners: Changes,
    /// By name; `changed` includes upstreams whose servers changed.
    pub upstreams: Changes,
    /// By address, for each surviving upstream whose servers changed.
    pub servers: BTreeMap<String, Changes>,
    /// Process-wide settings that changed and apply from now on.
    pub settings: Vec<&'static str>,
    /// Settings that changed but take effect only when sluice restarts.
    pub restart_required: Vec<&'static str>,
    /// Listeners (by `listen` address) that kept TLS and now serve other
    /// certificates: renewed files at the same paths, or new paths.
    pub certificates_renewed: Vec<String>,
}

impl ReloadReport {
    pub fn between(old: &Config, new: &Config) -> ReloadReport {
        let listeners = |c: &Config| {
            c.listeners
                .iter()
                .map(|l| (l.listen.to_string(), l.clone()))
                .collect::<Vec<_>>()
        };
        let upstreams = |c: &Config| {
            c.upstreams
                .iter()
                .map(|u| (u.name.clone(), u.clone()))
                .collect::<Vec<_>>()
        };
        let mut servers = BTreeMap::new();
        for upstream in &new.upstreams {
            let Some(before) = old.upstream(&upstream.name) else {
                continue;
            };
            let list = |u: &config::Upstream| {
                u.servers
                    .iter()
                    .map(|s| (s.address.clone(), s.clone()))
                    .collect::<Vec<_>>()
            };
            let changes = Changes::between(&list(before), &list(upstream));
            if !changes.is_empty() {
                servers.insert(upstream.name.clone(), changes);
            }
        }
        let settings = [
            (
                "global.shutdown_timeout",
                old.global.shutdown_timeout != new.global.shutdown_timeout,
            ),
            ("global.watch", old.global.watch != new.global.watch),
            (
                "global.trusted_proxies",
                old.global.trusted_proxies != new.global.trusted_proxies,
            ),
            ("log.access_log", old.log.access_log != new.log.access_log),
            (
                "admin.token",
                old.admin.as_ref().map(|a| &a.token) != new.admin.as_ref().map(|a| &a.token),
            ),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect();
        let restart_required = [
            (
                "global.worker_threads",
                old.global.worker_threads != new.global.worker_threads,
            ),
            ("log.level", old.log.level != new.log.level),
            ("log.format", old.log.format != new.log.format),
            (
                "admin.listen",
                old.admin.as_ref().map(|a| a.listen) != new.admin.as_ref().map(|a| a.listen),
            ),
            // The cluster tasks run with the settings they started with.
            ("cluster", old.cluster != new.cluster),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect();
        ReloadReport {
            listeners: Changes::between(&listeners(old), &listeners(new)),
            upstreams: Changes::between(&upstreams(old), &upstreams(new)),
            servers,
            settings,
            restart_required,
            certificates_renewed: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty()
            && self.upstreams.is_empty()
            && self.servers.is_empty()
            && self.settings.is_empty()
            && self.certificates_renewed.is_empty()
    }
}

impl fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no listener, upstream or server changed");
        }
        let mut parts = Vec::new();
        if !self.listeners.is_empty() {
            parts.push(format!("listeners {}", self.listeners));
        }
        if !self.upstreams.is_empty() {
            parts.push(format!("upstreams {}", self.upstreams));
        }
        for (upstream, changes) in &self.servers {
            parts.push(format!("servers of {upstream} {changes}"));
        }
        if !self.settings.is_empty() {
            parts.push(format!("settings [{}]", self.settings.join(", ")));
        }
        if !self.certificates_renewed.is_empty() {
            parts.push(format!(
                "certificates renewed on [{}]",
                self.certificates_renewed.join(", ")
            ));
        }
        f.write_str(&parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(text: &str) -> Config {
        config::parse(text, Path::new("sluice.toml")).expect("valid test config")
    }

    use crate::reload::TEST_CONFIG as BASE;

    #[test]
    fn report_names_what_changed() {
        let old = parse(BASE);
        let new = parse(
            r#"
[[listener]]
listen = "127.0.0.1:18081"
upstream = "web"

[upstream.web]
[[upstream.web.server]]
address = "127.0.0.1:19001"
weight = 3
[[upstream.web.server]]
address = "127.0.0.1:19003"

[upstream.api]
[[upstream.api.server]]
address = "127.0.0.1:19004"
"#,
        );
        let report = ReloadReport::between(&old, &new);
        assert_eq!(report.listeners.added, ["127.0.0.1:18081"]);
        assert_eq!(report.listeners.removed, ["127.0.0.1:18080"]);
        assert_eq!(report.upstreams.added, ["api"]);
        assert_eq!(report.upstreams.changed, ["web"]);
        let web = &report.servers["web"];
        assert_eq!(web.added, ["127.0.0.1:19003"]);
        assert_eq!(web.removed, ["127.0.0.1:19002"]);
        assert_eq!(web.changed, ["127.0.0.1:19001"]);
        assert_eq!(
            report.to_string(),
            "listeners +[127.0.0.1:18081] -[127.0.0.1:18080]; upstreams +[api] ~[web]; \
             servers of web +[127.0.0.1:19003] -[127.0.0.1:19002] ~[127.0.0.1:19001]"
        );
    }

    #[test]
    fn process_wide_settings_that_apply_at_once_are_named() {
        let new = BASE.replace(
            "[[listener]]",
            "[global]\ntrusted_proxies = [\"10.0.0.0/8\"]\nshutdown_timeout = \"5s\"\n\n[[listener]]",
        );
        let report = ReloadReport::between(&parse(BASE), &parse(&new));
        assert_eq!(
            report.settings,
            ["global.shutdown_timeout", "global.trusted_proxies"]
        );
        assert!(report.restart_required.is_empty());
        assert_eq!(
            report.to_string(),
            "settings [global.shutdown_timeout, global.trusted_proxies]"
        );
    }

    #[test]
    fn same_file_reports_no_change() {
        let report = ReloadReport::between(&parse(BASE), &parse(BASE));
        assert!(report.is_empty());
        assert_eq!(
            report.to_string(),
            "no listener, upstream or server changed"
        );
    }
}
