//! Values parsed once at load into their running types (hash keys, hosts,
//! addresses, ranges, sizes, paths) and the values refused.

use super::*;

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
