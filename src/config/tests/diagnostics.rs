//! Files that fail: every problem at its line and column, in one run,
//! and the errors of syntax, types, unknown and required keys and listener
//! addresses.

use super::*;

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
fn wrong_type_is_reported_at_its_position() {
    let text = "[[listener]]\nlisten = \"127.0.0.1:8080\"\nmax_headers = \"many\"\n";
    let errors = errors(text);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("3:15: invalid type: string \"many\""),
        "{errors:?}"
    );
}

#[test]
fn unknown_keys_and_wrong_types_are_reported_with_the_value_errors() {
    let text = r#"[global]
worker_threads = "two"
shutdown_timeout = "30 parsecs"
bogus_key = 1

[[listener]]
listen = "127.0.0.1:8080"
upstream = "nope"
colour = "blue"

[upstream.web]
balance = "fastest"
fail_on_status = [502, "503"]

[[upstream.web.server]]
address = "127.0.0.1:9001"
weight = 0

[upstream.web.health_check]
unknown = true
"#;
    assert_eq!(
        errors(text),
        [
            "2:18: invalid type: string \"two\", expected usize",
            "3:20: invalid duration \"30 parsecs\": expected a number followed by ms, s, m or h, such as \"250ms\", \"10s\" or \"1m30s\"",
            "4:1: unknown key \"bogus_key\", expected one of worker_threads, shutdown_timeout, watch, trusted_proxies",
            "8:12: upstream \"nope\" is not defined (defined: web)",
            "9:1: unknown key \"colour\", expected one of name, listen, upstream, header_timeout, idle_timeout, max_header_size, max_headers, max_body_size, tls, route",
            "12:11: invalid balance \"fastest\": expected one of round_robin, least_conn, ip_hash, hash, random",
            "13:24: invalid type: string \"503\", expected i64",
            "17:10: weight = 0 is out of range: expected 1 to 4294967295",
            "20:1: unknown key \"unknown\", expected one of path, interval, timeout, fails, passes, status",
        ]
    );
}

#[test]
fn unknown_keys_in_inline_and_dotted_tables_are_reported() {
    let text = r#"listener = [{ listen = "127.0.0.1:8080", colour = 1 }, { listen = "127.0.0.1:8081", size = 2 }]
upstream.web.server = [{ address = "127.0.0.1:9001", wieght = 2 }]
upstream.web.sticky.cookie_name = "s"
"#;
    assert_eq!(
        errors(text),
        [
            "1:42: unknown key \"colour\", expected one of name, listen, upstream, header_timeout, idle_timeout, max_header_size, max_headers, max_body_size, tls, route",
            "1:85: unknown key \"size\", expected one of name, listen, upstream, header_timeout, idle_timeout, max_header_size, max_headers, max_body_size, tls, route",
            "2:54: unknown key \"wieght\", expected one of address, weight, max_conns, backup, down, drain, slow_start",
            "3:21: unknown key \"cookie_name\", expected one of cookie, max_age, path, http_only, secure, same_site, secret",
        ]
    );
}

#[test]
fn a_required_key_of_the_wrong_type_is_not_also_missing() {
    let text =
        "[[listener]]\nlisten = 8080\n\n[upstream.web]\n[[upstream.web.server]]\naddress = 9001\n";
    assert_eq!(
        errors(text),
        [
            "2:10: invalid type: integer `8080`, expected a string",
            "6:11: invalid type: integer `9001`, expected a string",
        ]
    );
}

#[test]
fn rejected_lists_are_not_also_reported_empty() {
    let text = "listener = \"127.0.0.1:8080\"\n\n[upstream.web]\nserver = \"127.0.0.1:9001\"\n";
    assert_eq!(
        errors(text),
        [
            "1:12: invalid type: string \"127.0.0.1:8080\", expected a sequence",
            "4:10: invalid type: string \"127.0.0.1:9001\", expected a sequence",
        ]
    );
}

#[test]
fn a_table_missing_a_required_key_does_not_hide_the_rest_of_the_file() {
    let text = "[[listener]]\nlisten = \"127.0.0.1:8080\"\nupstream = \"web\"\n\n\
                [upstream.web]\n[[upstream.web.server]]\nweight = 2\n\
                [[upstream.web.server]]\naddress = \"127.0.0.1:9002\"\nweight = 0\n";
    assert_eq!(
        errors(text),
        [
            "6:1: missing required key \"address\"",
            "10:10: weight = 0 is out of range: expected 1 to 4294967295",
        ]
    );
}

#[test]
fn rejected_keys_stop_at_fifty() {
    let keys = |n: usize| -> String { (0..n).map(|i| format!("k{i} = 1\n")).collect() };
    let too_many = errors(&format!("[global]\n{}", keys(60)));
    assert_eq!(too_many.len(), 50);
    assert!(
        too_many[49].starts_with("51:1: unknown key \"k49\""),
        "{too_many:?}"
    );
    // Fifty is not too many: the values are still checked.
    let fifty = errors(&format!("[global]\n{}", keys(50)));
    assert_eq!(fifty.len(), 51);
    assert!(fifty[0].contains("no [[listener]]"), "{fifty:?}");
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
fn a_listener_named_by_its_address_clashes_with_a_name_taken_already() {
    let text = r#"
[[listener]]
name = "127.0.0.1:8081"
listen = "127.0.0.1:8080"
upstream = "web"

[[listener]]
listen = "127.0.0.1:8081"
upstream = "web"

[upstream.web]
[[upstream.web.server]]
address = "127.0.0.1:9001"
"#;
    assert_eq!(
        errors(text),
        ["8:10: listener name \"127.0.0.1:8081\" is already used by another listener"]
    );
}
