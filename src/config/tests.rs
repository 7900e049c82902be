//! The config module's behaviour as a user meets it: files that parse into
//! the model, and files that fail with every problem at its line and column.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

const MINIMAL: &str = r#"
[[listener]]
listen = "127.0.0.1:8080"
upstream = "web"

[upstream.web]
[[upstream.web.server]]
address = "127.0.0.1:9001"
"#;

fn parse_ok(text: &str) -> Config {
    parse(text, Path::new("test.toml")).unwrap_or_else(|e| panic!("expected a valid config:\n{e}"))
}

/// Every diagnostic as `LINE:COL: message`.
fn errors(text: &str) -> Vec<String> {
    let error = parse(text, Path::new("test.toml")).expect_err("expected an invalid config");
    error
        .diagnostics()
        .iter()
        .map(|d| format!("{}:{}: {}", d.line, d.column, d.kind))
        .collect()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn spec_reference_block_parses_once_api_is_defined() {
    // The spec's block, without its commented-out SNI entry, plus the `api`
    // upstream its route names.
    let spec = r#"
[global]
worker_threads = 0
shutdown_timeout = "30s"
watch = true
trusted_proxies = []

[log]
level = "info"
access_log = true
format = "text"

[admin]
listen = "127.0.0.1:9900"
token = ""

[[listener]]
name = "public"
listen = "0.0.0.0:8080"
upstream = "web"
header_timeout = "10s"
idle_timeout = "60s"
max_header_size = "64KiB"
max_headers = 100
max_body_size = "0"

[listener.tls]
cert = "certs/default.pem"
key = "certs/default.key"
handshake_timeout = "10s"
unknown_sni = "default"

[[listener.route]]
host = "api.example.com"
path_prefix = "/v1/"
upstream = "api"

[upstream.web]
balance = "round_robin"
hash_key = "client_ip"
client_ip_prefix = [32, 128]
consistent = true
balance_factor = 0
max_fails = 1
fail_timeout = "10s"
connect_timeout = "3s"
response_timeout = "60s"
tries = 3
retry_budget = 0.2
queue = 0
queue_timeout = "5s"
keepalive = 64
fail_on_status = []
tls = false
server_name = ""
ca = ""

[upstream.web.sticky]
cookie = "sluice_web"
max_age = "1h"
path = "/"
http_only = true
secure = false
same_site = "Lax"
secret = ""

[upstream.web.health_check]
path = "/healthz"
interval = "5s"
timeout = "2s"
fails = 2
passes = 2
status = "200-399"

[[upstream.web.server]]
address = "127.0.0.1:9001"
weight = 1
max_conns = 0
backup = false
down = false
drain = false
slow_start = "0s"

[upstream.api]
[[upstream.api.server]]
address = "127.0.0.1:9101"
"#;
    let config = parse(spec, Path::new("/etc/sluice/sluice.toml")).unwrap();
    let listener = &config.listeners[0];
    assert_eq!(listener.name, "public");
    assert_eq!(
        listener.listen,
        "0.0.0.0:8080".parse::<SocketAddr>().unwrap()
    );
    let tls = listener.tls.as_ref().unwrap();
    assert_eq!(tls.cert, PathBuf::from("/etc/sluice/certs/default.pem"));
    assert_eq!(tls.key, PathBuf::from("/etc/sluice/certs/default.key"));
    assert_eq!(tls.unknown_sni, UnknownSni::Default);
    assert_eq!(
        listener.routes,
        vec![Route {
            host: Some(HostMatch::Exact("api.example.com".into())),
            path_prefix: Some("/v1/".into()),
            upstream: "api".into(),
        }]
    );
    let web = config.upstream("web").unwrap();
    let sticky = web.sticky.as_ref().unwrap();
    assert_eq!(sticky.max_age, Some(secs(3600)));
    assert_eq!(sticky.same_site, SameSite::Lax);
    let health = web.health_check.as_ref().unwrap();
    assert_eq!(health.status, (200, 399));
    assert_eq!(health.fails.get(), 2);
    assert_eq!(config.admin.as_ref().unwrap().token, None);
    // Writing every default out must mean the same as leaving it out.
    let defaults = parse_ok(MINIMAL);
    assert_eq!(web.balance_factor, defaults.upstreams[0].balance_factor);
    assert_eq!(web.servers, defaults.upstreams[0].servers);
    assert_eq!(web.retry_budget, defaults.upstreams[0].retry_budget);
}

#[test]
fn omitted_keys_take_the_documented_defaults() {
    let config = parse_ok(MINIMAL);
    assert_eq!(
        config.global,
        Global {
            worker_threads: 0,
            shutdown_timeout: secs(30),
            watch: true,
            trusted_proxies: vec![],
        }
    );
    assert_eq!(
        config.log,
        Log {
            level: "info".into(),
            access_log: true,
            format: LogFormat::Text,
        }
    );
    assert_eq!(config.admin, None);
    let listener = &config.listeners[0];
    assert_eq!(listener.name, "127.0.0.1:8080");
    assert_eq!(listener.upstream.as_deref(), Some("web"));
    assert_eq!(listener.header_timeout, secs(10));
    assert_eq!(listener.idle_timeout, secs(60));
    assert_eq!(listener.max_header_size, 64 * 1024);
    assert_eq!(listener.max_headers, 100);
    assert_eq!(listener.max_body_size, None);
    assert_eq!(listener.tls, None);
    assert!(listener.routes.is_empty());

    let web = &config.upstreams[0];
    assert_eq!(web.name, "web");
    assert_eq!(web.balance, Balance::RoundRobin);
    assert_eq!(web.hash_key, HashKey::ClientIp);
    assert_eq!(web.client_ip_prefix, (32, 128));
    assert!(web.consistent);
    assert_eq!(web.balance_factor, None);
    assert_eq!(web.max_fails, 1);
    assert_eq!(web.fail_timeout, secs(10));
    assert_eq!(web.connect_timeout, secs(3));
    assert_eq!(web.response_timeout, secs(60));
    assert_eq!(web.tries.get(), 3);
    assert_eq!(web.retry_budget, 0.2);
    assert_eq!(web.queue, 0);
    assert_eq!(web.queue_timeout, secs(5));
    assert_eq!(web.keepalive, 64);
    assert!(web.fail_on_status.is_empty());
    assert!(!web.tls);
    assert_eq!(web.server_name, None);
    assert_eq!(web.ca, None);
    assert_eq!(web.sticky, None);
    assert_eq!(web.health_check, None);
    assert_eq!(
        web.servers,
        vec![Server {
            address: "127.0.0.1:9001".into(),
            host_len: 9,
            addr: "127.0.0.1:9001".parse().unwrap(),
            weight: NonZeroU32::MIN,
            max_conns: None,
            backup: false,
            down: false,
            drain: false,
            slow_start: Duration::ZERO,
        }]
    );
}

#[test]
fn server_addresses_are_split_once_as_nginx_splits_them() {
    let text = format!("{MINIMAL}[[upstream.web.server]]\naddress = \"[::1]:80\"\n");
    let config = parse_ok(&text);
    let servers = &config.upstreams[0].servers;
    let split = |i: usize| {
        let s: &Server = &servers[i];
        (s.host(), s.port(), s.tls_name())
    };
    assert_eq!(split(0), ("127.0.0.1", "9001", "127.0.0.1"));
    assert_eq!(split(1), ("[::1]", "80", "::1"));
}

#[test]
fn empty_optional_tables_take_their_defaults() {
    let text = format!(
        "{MINIMAL}\n[upstream.web.sticky]\n[upstream.web.health_check]\n[admin]\n[log]\n[global]\n"
    );
    let config = parse_ok(&text);
    let web = &config.upstreams[0];
    assert_eq!(
        web.sticky,
        Some(Sticky {
            cookie: "sluice_web".into(),
            max_age: None,
            path: "/".into(),
            http_only: true,
            secure: false,
            same_site: SameSite::Lax,
            secret: String::new(),
        })
    );
    assert_eq!(
        web.health_check,
        Some(HealthCheck {
            path: "/healthz".into(),
            interval: secs(5),
            timeout: secs(2),
            fails: NonZeroU32::new(2).unwrap(),
            passes: NonZeroU32::new(2).unwrap(),
            status: (200, 399),
        })
    );
    assert_eq!(
        config.admin,
        Some(Admin {
            listen: "127.0.0.1:9900".parse().unwrap(),
            token: None,
        })
    );
}

#[test]
fn upstreams_keep_file_order() {
    let text = r#"
[[listener]]
listen = "127.0.0.1:8080"
[[upstream.zeta.server]]
address = "127.0.0.1:1"
[upstream.alpha]
[[upstream.alpha.server]]
address = "127.0.0.1:2"
[upstream.mid]
[[upstream.mid.server]]
address = "127.0.0.1:3"
"#;
    let names: Vec<_> = parse_ok(text)
        .upstreams
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["zeta", "alpha", "mid"]);
}

#[test]
fn misspelt_key_is_reported_at_its_position() {
    let text = "[[listener]]\nlisten = \"127.0.0.1:8080\"\n\n[[upstream.web.server]]\naddress = \"127.0.0.1:9001\"\n  weigth = 2\n";
    assert_eq!(
        errors(text),
        [
            "6:3: unknown key \"weigth\", expected one of address, weight, max_conns, backup, down, drain, slow_start"
        ]
    );
}

#[test]
fn display_prefixes_every_line_with_file_line_and_column() {
    let text = "[[listener]]\nlisten = \"nowhere\"\nupstream = \"api\"\n";
    let error = parse(text, Path::new("conf/sluice.toml")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "conf/sluice.toml:2:10: invalid listen \"nowhere\": expected an IP address and port, such as 0.0.0.0:8080 or [::1]:8080\n\
         conf/sluice.toml:3:12: upstream \"api\" is not defined (defined: none)"
    );
}

#[test]
fn route_to_a_missing_upstream_points_at_the_reference_and_lists_the_defined_ones() {
    let text = format!(
        "{MINIMAL}\n[upstream.static]\n[[upstream.static.server]]\naddress = \"127.0.0.1:9002\"\n\n\
         [[listener.route]]\npath_prefix = \"/v1/\"\nupstream = \"api\"\n"
    );
    let line = text
        .lines()
        .position(|l| l == "upstream = \"api\"")
        .unwrap()
        + 1;
    assert_eq!(
        errors(&text),
        [format!(
            "{line}:12: upstream \"api\" is not defined (defined: web, static)"
        )]
    );
}

#[test]
fn every_validation_error_is_reported_in_one_run() {
    let text = r#"[global]
trusted_proxies = ["10.0.0.0/33", "10.1.0.0/16", "not-an-ip"]
shutdown_timeout = "5x"

[[listener]]
listen = "0.0.0.0:8080"
[[listener]]
listen = "0.0.0.0:8080"

[upstream.web]
balance = "fastest"
hash_key = "header:"
balance_factor = 0.5
tries = 0
max_fails = -1
retry_budget = 1.5
client_ip_prefix = [33, 128]

[upstream.web.health_check]
path = "healthz"
interval = "0s"
status = "399-200"

[upstream.web.sticky]
same_site = "sometimes"

[[upstream.web.server]]
address = "127.0.0.1:9001"
weight = 0
[[upstream.web.server]]
address = "127.0.0.1:9001"
max_conns = -5

[upstream.empty]
"#;
    assert_eq!(
        errors(text),
        [
            "2:20: invalid CIDR \"10.0.0.0/33\": expected an IP address with an optional prefix length, such as 10.0.0.0/8 or ::1/128",
            "2:50: invalid CIDR \"not-an-ip\": expected an IP address with an optional prefix length, such as 10.0.0.0/8 or ::1/128",
            "3:20: invalid duration \"5x\": expected a number followed by ms, s, m or h, such as \"250ms\", \"10s\" or \"1m30s\"",
            "8:10: listen address 0.0.0.0:8080 is already used by listener \"0.0.0.0:8080\"",
            "11:11: invalid balance \"fastest\": expected one of round_robin, least_conn, ip_hash, hash, random",
            "12:12: invalid hash_key \"header:\": expected client_ip, uri, header:NAME, cookie:NAME or query:NAME",
            "13:18: balance_factor = 0.5 is out of range: expected 0 (off) or a number greater than 1, such as 1.25",
            "14:9: tries = 0 is out of range: expected 1 to 4294967295",
            "15:13: max_fails = -1 is out of range: expected 0 to 4294967295",
            "16:16: retry_budget = 1.5 is out of range: expected a share from 0 to 1, such as 0.2",
            "17:21: client_ip_prefix IPv4 length = 33 is out of range: expected 0 to 32",
            "20:8: path \"healthz\" must start with \"/\"",
            "21:12: interval must be greater than 0",
            "22:10: invalid status \"399-200\": expected a status code or an inclusive range such as \"200-399\", within 100-599",
            "25:13: invalid same_site \"sometimes\": expected one of Strict, Lax, None",
            "29:10: weight = 0 is out of range: expected 1 to 4294967295",
            "31:11: server \"127.0.0.1:9001\" appears twice in upstream \"web\"",
            "32:13: max_conns = -5 is out of range: expected 0 to 4294967295",
            "34:11: upstream \"empty\" has no servers: expected at least one [[upstream.empty.server]]",
        ]
    );
}

#[test]
fn a_file_without_listeners_is_rejected() {
    let text = "[[upstream.web.server]]\naddress = \"127.0.0.1:9001\"\n";
    assert_eq!(
        errors(text),
        ["1:1: no [[listener]] is configured: expected at least one"]
    );
}

#[test]
fn missing_required_key_names_it() {
    let text = "[[listener]]\nname = \"public\"\n";
    assert_eq!(errors(text), ["1:1: missing required key \"listen\""]);
}

#[test]
fn wrong_type_stops_at_the_first_with_its_position() {
    let text = "[[listener]]\nlisten = \"127.0.0.1:8080\"\nmax_headers = \"many\"\n";
    let errors = errors(text);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("3:15: invalid type: string \"many\""),
        "{errors:?}"
    );
}

#[test]
fn syntax_error_is_one_line_with_a_position() {
    assert_eq!(
        errors("[[listener]\nlisten = 1\n"),
        ["1:11: invalid table header: expected `.`, `]]`"]
    );
    assert_eq!(
        errors("[upstream.web]\n[upstream.web]\n"),
        ["2:1: invalid table header: duplicate key `web` in table `upstream`"]
    );
}

#[test]
fn public_admin_listener_needs_a_token() {
    let text = format!("{MINIMAL}\n[admin]\nlisten = \"0.0.0.0:9900\"\n");
    let line = text.lines().count();
    assert_eq!(
        errors(&text),
        [format!(
            "{line}:10: token is required when admin listen is not loopback (0.0.0.0:9900)"
        )]
    );
    let with_token = format!("{MINIMAL}\n[admin]\nlisten = \"0.0.0.0:9900\"\ntoken = \"s3cret\"\n");
    assert_eq!(
        parse_ok(&with_token).admin.unwrap().token.as_deref(),
        Some("s3cret")
    );
    parse_ok(&format!("{MINIMAL}\n[admin]\nlisten = \"[::1]:9900\"\n"));
}

#[test]
fn bad_admin_address_is_one_error() {
    let text = format!("{MINIMAL}\n[admin]\nlisten = \"localhost\"\n");
    let errors = errors(&text);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].contains("invalid listen \"localhost\""),
        "{errors:?}"
    );
}

#[test]
fn admin_and_listener_cannot_share_an_address() {
    let text = format!("{MINIMAL}\n[admin]\nlisten = \"127.0.0.1:8080\"\n");
    assert_eq!(
        errors(&text),
        ["3:10: listen address 127.0.0.1:8080 is already used by the admin listener"]
    );
}

#[test]
fn port_zero_listeners_never_clash() {
    let text = "[[listener]]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\nname = \"b\"\n";
    assert_eq!(parse_ok(text).listeners.len(), 2);
}

#[test]
fn hash_keys_are_typed() {
    let key = |k: &str| {
        let text = format!("{MINIMAL}hash_key = \"{k}\"\n").replace(
            "[upstream.web]\n[[upstream.web.server]]\naddress = \"127.0.0.1:9001\"\nhash_key",
            "[upstream.web]\nhash_key",
        );
        let text = format!("{text}[[upstream.web.server]]\naddress = \"127.0.0.1:9001\"\n");
        parse(&text, Path::new("t.toml")).map(|c| c.upstreams[0].hash_key.clone())
    };
    assert_eq!(key("client_ip").unwrap(), HashKey::ClientIp);
    assert_eq!(key("uri").unwrap(), HashKey::Uri);
    assert_eq!(
        key("header:X-User").unwrap(),
        HashKey::Header(http::HeaderName::from_static("x-user"))
    );
    assert_eq!(
        key("cookie:Session").unwrap(),
        HashKey::Cookie("Session".into())
    );
    assert_eq!(key("query:id").unwrap(), HashKey::Query("id".into()));
    for bad in ["", "header", "cookie:", "path:x", "header:bad name"] {
        assert!(key(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn route_hosts_are_lower_cased_and_wildcards_become_suffixes() {
    let text = format!(
        "{MINIMAL}\n[[listener.route]]\nhost = \"API.Example.com\"\nupstream = \"web\"\n\
         [[listener.route]]\nhost = \"*.Example.org\"\nupstream = \"web\"\n"
    );
    let hosts: Vec<_> = parse_ok(&text).listeners[0]
        .routes
        .iter()
        .map(|r| r.host.clone())
        .collect();
    assert_eq!(
        hosts,
        [
            Some(HostMatch::Exact("api.example.com".into())),
            Some(HostMatch::Suffix(".example.org".into()))
        ]
    );
    for bad in ["*", "a.*.com", "host:8080", "", "*.", "a..b"] {
        let text = format!("{MINIMAL}\n[[listener.route]]\nhost = \"{bad}\"\nupstream = \"web\"\n");
        assert!(errors(&text)[0].contains("invalid host"), "{bad:?}");
    }
    let text = format!("{MINIMAL}\n[[listener.route]]\npath_prefix = \"v1\"\nupstream = \"web\"\n");
    assert!(errors(&text)[0].contains("path_prefix \"v1\" must start with \"/\""));
}

#[test]
fn trusted_proxies_accept_bare_addresses_as_single_hosts() {
    let text = format!(
        "[global]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.168.1.1\", \"::1\", \"fd00::/8\"]\n{MINIMAL}"
    );
    let proxies = parse_ok(&text).global.trusted_proxies;
    let prefixes: Vec<u8> = proxies.iter().map(|c| c.prefix).collect();
    assert_eq!(prefixes, [8, 32, 128, 8]);
    assert!(proxies[0].contains("10.200.3.4".parse::<IpAddr>().unwrap()));
    assert!(!proxies[1].contains("192.168.1.2".parse::<IpAddr>().unwrap()));
}

#[test]
fn health_status_is_an_inclusive_range() {
    let status = |s: &str| {
        let text = format!("{MINIMAL}\n[upstream.web.health_check]\nstatus = {s}\n");
        parse(&text, Path::new("t.toml"))
            .map(|c| c.upstreams[0].health_check.as_ref().unwrap().status)
    };
    assert_eq!(status("\"200\"").unwrap(), (200, 200));
    assert_eq!(status("204").unwrap(), (204, 204));
    assert_eq!(status("\"200-299\"").unwrap(), (200, 299));
    for bad in ["\"99\"", "\"200-600\"", "\"300-200\"", "\"ok\"", "0"] {
        assert!(status(bad).is_err(), "{bad}");
    }
}

#[test]
fn same_site_and_choices_ignore_case() {
    let text =
        format!("{MINIMAL}\n[upstream.web.sticky]\nsame_site = \"strict\"\ncookie = \"sid\"\n");
    let sticky = parse_ok(&text).upstreams[0].sticky.clone().unwrap();
    assert_eq!(sticky.same_site, SameSite::Strict);
    assert_eq!(sticky.cookie, "sid");
    let text = format!("{MINIMAL}\n[upstream.web.sticky]\ncookie = \"bad name\"\n");
    assert!(errors(&text)[0].contains("invalid cookie name \"bad name\""));
}

#[test]
fn relative_tls_paths_are_resolved_against_the_config_directory() {
    let text = r#"
[[listener]]
listen = "127.0.0.1:8443"
[listener.tls]
cert = "certs/site.pem"
key = "/abs/site.key"
[[listener.tls.sni]]
names = ["API.example.com", "*.example.org"]
cert = "api.pem"
key = "api.key"
"#;
    let config = parse(text, Path::new("/etc/sluice/sluice.toml")).unwrap();
    let tls = config.listeners[0].tls.clone().unwrap();
    assert_eq!(tls.cert, PathBuf::from("/etc/sluice/certs/site.pem"));
    assert_eq!(tls.key, PathBuf::from("/abs/site.key"));
    assert_eq!(tls.sni[0].names, ["api.example.com", "*.example.org"]);
    assert_eq!(tls.sni[0].cert, PathBuf::from("/etc/sluice/api.pem"));
    let empty_names = text.replace(
        "names = [\"API.example.com\", \"*.example.org\"]",
        "names = []",
    );
    assert_eq!(errors(&empty_names), ["8:9: names must not be empty"]);
}

#[test]
fn upstream_tls_options_turn_empty_strings_into_none() {
    let text = format!("{MINIMAL}tls = true\nserver_name = \"\"\nca = \"ca.pem\"\n").replace(
        "[upstream.web]\n[[upstream.web.server]]\naddress = \"127.0.0.1:9001\"\ntls",
        "[[upstream.web.server]]\naddress = \"127.0.0.1:9001\"\n[upstream.web]\ntls",
    );
    let web = parse(&text, Path::new("conf/sluice.toml"))
        .unwrap()
        .upstreams
        .remove(0);
    assert!(web.tls);
    assert_eq!(web.server_name, None);
    assert_eq!(web.ca, Some(PathBuf::from("conf/ca.pem")));
}

#[test]
fn server_names_resolve_and_malformed_addresses_are_errors() {
    let text = MINIMAL.replace("127.0.0.1:9001", "localhost:9001");
    let server = parse_ok(&text).upstreams[0].servers[0].clone();
    assert_eq!(server.address, "localhost:9001");
    assert!(server.addr.ip().is_loopback());
    assert_eq!(server.addr.port(), 9001);
    for bad in [
        "127.0.0.1",
        "localhost:http",
        ":80",
        "bad host:80",
        "::1:80",
    ] {
        let text = MINIMAL.replace("127.0.0.1:9001", bad);
        assert!(
            errors(&text)[0].contains("invalid server address"),
            "{bad:?}"
        );
    }
}

#[test]
fn sizes_accept_integers_and_units() {
    let text = MINIMAL.replace(
        "upstream = \"web\"\n",
        "upstream = \"web\"\nmax_header_size = 8192\nmax_body_size = \"10MiB\"\n",
    );
    let listener = parse_ok(&text).listeners.remove(0);
    assert_eq!(listener.max_header_size, 8192);
    assert_eq!(listener.max_body_size, Some(10 << 20));
    let bad = MINIMAL.replace(
        "upstream = \"web\"\n",
        "upstream = \"web\"\nmax_body_size = \"10 apples\"\n",
    );
    assert!(errors(&bad)[0].starts_with("5:17: invalid size \"10 apples\""));
}

#[test]
fn unreadable_file_names_the_file() {
    let error = load(Path::new("/nonexistent/sluice.toml")).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("/nonexistent/sluice.toml: cannot read"),
        "{error}"
    );
    assert!(error.diagnostics().is_empty());
}

#[test]
fn summary_shows_listeners_upstreams_admin_and_() {
    let text = format!("{MINIMAL}backup = true\n\n[admin]\n");
    let summary = summary(&parse_ok(&text));
    assert_eq!(
        summary,
        "test.toml: ok\n\
         listeners:\n  127.0.0.1:8080 on 127.0.0.1:8080, 0 routes, default upstream: web\n\
         upstreams:\n  web (round_robin)\n    127.0.0.1:9001 weight 1 backup\n\
         admin: 127.0.0.1:9900 (no token)\n"
    );
}

#[test]
fn every_example_config_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            load(&path).unwrap_or_else(|e| panic!("{e}"));
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "expected the example configs in {}",
        dir.display()
    );
}

#[test]
fn cluster_table_has_the_documented_defaults() {
    let config = parse_ok(&format!(
        "{MINIMAL}\n[cluster]\nredis = \"redis://10.0.0.5:6380/2\"\n"
    ));
    let cluster = config.cluster.unwrap();
    assert_eq!(cluster.redis.text, "redis://10.0.0.5:6380/2");
    assert_eq!(cluster.redis.info.addr().to_string(), "10.0.0.5:6380");
    assert_eq!(cluster.instance, None);
    assert_eq!(cluster.key_prefix, "sluice");
    assert_eq!(cluster.heartbeat, secs(1));
    assert!(parse_ok(MINIMAL).cluster.is_none());
}

#[test]
fn cluster_needs_a_redis_url_that_parses_and_a_heartbeat() {
    let missing = format!("{MINIMAL}\n[cluster]\ninstance = \"a\"\n");
    assert!(
        errors(&missing)[0].contains("missing required key \"redis\""),
        "{:?}",
        errors(&missing)
    );
    let text = format!(
        "{MINIMAL}\n[cluster]\nredis = \"http://example.com\"\nheartbeat = \"0s\"\nkey_prefix = \" \"\n"
    );
    let line = MINIMAL.lines().count() + 3;
    let errors = errors(&text);
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors[0].starts_with(&format!(
            "{line}:9: invalid redis URL \"http://example.com\""
        )),
        "{errors:?}"
    );
    assert_eq!(
        errors[1],
        format!("{}:13: heartbeat must be greater than 0", line + 1)
    );
    assert_eq!(
        errors[2],
        format!("{}:14: key_prefix must not be empty", line + 2)
    );
}

#[test]
fn websocket_closes_default_to_1012_over_ten_seconds() {
    let web = &parse_ok(MINIMAL).upstreams[0];
    assert_eq!(
        web.websocket,
        WebSocket {
            close_code: 1012,
            close_spread: secs(10),
        }
    );
    let text =
        format!("{MINIMAL}\n[upstream.web.websocket]\nclose_code = 4000\nclose_spread = \"0s\"\n");
    let web = &parse_ok(&text).upstreams[0];
    assert_eq!(web.websocket.close_code, 4000);
    assert_eq!(web.websocket.close_spread, Duration::ZERO);
}

#[test]
fn a_close_code_no_endpoint_may_send_is_refused() {
    for code in [999, 1005, 1006, 1015, 2000, 5000] {
        let text = format!("{MINIMAL}\n[upstream.web.websocket]\nclose_code = {code}\n");
        let errors = errors(&text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains(&format!("invalid close_code {code}")),
            "{errors:?}"
        );
    }
}
