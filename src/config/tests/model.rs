//! Files that parse: the spec's reference block, the documented defaults,
//! file order, the example configs and the start-up summary.

use super::*;

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
