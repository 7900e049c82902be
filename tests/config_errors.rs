//! `sluice check` and `sluice run` on configs, through the real binary: bad
//! files are refused with `FILE:LINE:COL` for every problem and exit 1, and
//! every example config in `config/` passes. Every unknown key, wrong type
//! and bad value is reported in one run; a syntax error alone.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{client::poll_until, proxy::*};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// A valid config to break: line numbers below refer to this layout.
fn base(extra_upstream_key: &str, server_key: &str) -> String {
    format!(
        "[[listener]]\n\
         listen = \"127.0.0.1:{}\"\n\
         upstream = \"web\"\n\
         \n\
         [upstream.web]\n\
         {extra_upstream_key}\n\
         [[upstream.web.server]]\n\
         address = \"127.0.0.1:9\"\n\
         {server_key}\n",
        free_port()
    )
}

/// Runs `check` and returns stderr, asserting it failed.
fn refused(toml: &str) -> String {
    let (ok, stdout, stderr) = Proxy::check(toml);
    assert!(!ok, "accepted:\n{toml}\nstdout:\n{stdout}");
    stderr
}

fn assert_points_at(stderr: &str, line: usize, column: usize, words: &str) {
    let position = format!("sluice.toml:{line}:{column}: ");
    let hit = stderr
        .lines()
        .find(|l| l.contains(&position))
        .unwrap_or_else(|| panic!("no diagnostic at {position} in:\n{stderr}"));
    assert!(
        hit.to_lowercase().contains(words),
        "expected {words:?} in: {hit}"
    );
}

#[test]
fn valid_config_passes_check_with_a_summary() {
    let (ok, stdout, stderr) = Proxy::check(&base("", ""));
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("web"),
        "the summary names the upstream:\n{stdout}"
    );
}

#[test]
fn unknown_key_is_reported_at_its_line() {
    let stderr = refused(&base("balanse = \"round_robin\"", ""));
    assert_points_at(&stderr, 6, 1, "unknown key");
    assert!(stderr.contains("balanse"), "{stderr}");
}

#[test]
fn missing_upstream_is_reported_at_the_reference() {
    let toml = base("", "").replace("upstream = \"web\"", "upstream = \"api\"");
    let stderr = refused(&toml);
    let line = stderr
        .lines()
        .find(|l| l.contains("sluice.toml:3:"))
        .unwrap_or_else(|| panic!("no diagnostic on line 3:\n{stderr}"));
    assert!(line.contains("\"api\" is not defined"), "{line}");
}

#[test]
fn bad_duration_is_reported_with_what_was_expected() {
    let stderr = refused(&base("fail_timeout = \"10 parsecs\"", ""));
    assert!(stderr.contains("sluice.toml:6:"), "{stderr}");
    assert!(
        stderr.contains("invalid duration \"10 parsecs\""),
        "{stderr}"
    );
}

#[test]
fn zero_weight_is_refused() {
    let stderr = refused(&base("", "weight = 0"));
    assert!(stderr.contains("sluice.toml:9:"), "{stderr}");
    assert!(stderr.contains("weight"), "{stderr}");
}

/// A timeout of zero would time every request out at once (408 or 504
/// before anything could happen): refused where it is written.
#[test]
fn zero_timeouts_are_refused() {
    let toml = format!(
        "[[listener]]\n\
         listen = \"127.0.0.1:{}\"\n\
         upstream = \"web\"\n\
         header_timeout = \"0s\"\n\
         idle_timeout = \"0ms\"\n\
         \n\
         [upstream.web]\n\
         connect_timeout = \"0s\"\n\
         response_timeout = \"0s\"\n\
         [[upstream.web.server]]\n\
         address = \"127.0.0.1:9\"\n",
        free_port()
    );
    let stderr = refused(&toml);
    assert_eq!(
        positions(&stderr),
        ["4:18", "5:16", "8:19", "9:20"],
        "{stderr}"
    );
    for (line, column, key) in [
        (4, 18, "header_timeout"),
        (5, 16, "idle_timeout"),
        (8, 19, "connect_timeout"),
        (9, 20, "response_timeout"),
    ] {
        assert_points_at(
            &stderr,
            line,
            column,
            &format!("{key} must be greater than 0"),
        );
    }
}

/// `[log] level` is a level or `RUST_LOG`'s directives; anything else is
/// refused at the key rather than turned into a filter that logs nothing.
#[test]
fn a_log_level_that_is_no_filter_is_refused() {
    for (level, words) in [
        ("loud", "\"loud\" is not a level"),
        ("info,=zz[", "invalid log level"),
        ("sluice=loud", "invalid log level"),
    ] {
        let toml = format!("[log]\nlevel = \"{level}\"\n\n{}", base("", ""));
        let stderr = refused(&toml);
        assert_eq!(positions(&stderr), ["2:9"], "{stderr}");
        assert_points_at(&stderr, 2, 9, words);
    }
    for level in ["warn", "INFO", "info,sluice::access=warn", "debug,"] {
        let toml = format!("[log]\nlevel = \"{level}\"\n\n{}", base("", ""));
        let (ok, _, stderr) = Proxy::check(&toml);
        assert!(ok, "{level}: {stderr}");
    }
}

/// A size that does not parse is one error, not also an out-of-range zero.
#[test]
fn a_malformed_size_is_reported_once() {
    let toml = base("", "").replace(
        "upstream = \"web\"\n",
        "upstream = \"web\"\nmax_header_size = \"-5KiB\"\n",
    );
    let stderr = refused(&toml);
    assert_eq!(positions(&stderr), ["4:19"], "{stderr}");
    assert_points_at(&stderr, 4, 19, "invalid size \"-5kib\"");
}

#[test]
fn bad_cidr_is_refused() {
    let toml = format!(
        "[global]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n\n{}",
        base("", "")
    );
    let stderr = refused(&toml);
    assert!(stderr.contains("sluice.toml:2:"), "{stderr}");
    assert!(stderr.contains("10.0.0.0/33"), "{stderr}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let toml = base("tries = 0\nconnect_timeout = \"soon\"", "weight = 0");
    let stderr = refused(&toml);
    let diagnostics = stderr
        .lines()
        .filter(|l| l.contains("sluice.toml:"))
        .count();
    assert!(diagnostics >= 3, "three problems, each reported:\n{stderr}");
}

/// Runs `check` on `toml` and returns its exit code and stderr.
fn check_exit(toml: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temp dir for the config");
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, toml).expect("write the config");
    let output = Command::new(BIN)
        .arg("check")
        .arg("-c")
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .expect("run sluice check");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), stderr)
}

/// The `LINE:COL` of every diagnostic in `stderr`, in order.
fn positions(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.split_once("sluice.toml:"))
        .filter_map(|(_, rest)| {
            let mut parts = rest.splitn(3, ':');
            Some(format!("{}:{}", parts.next()?, parts.next()?))
        })
        .collect()
}

#[test]
fn unknown_keys_in_every_table_are_all_reported() {
    let toml = format!(
        "[global]\nfoo = 1\nbar = 2\n\n[log]\nbaz = 1\n\n{}",
        base("balanse = \"round_robin\"", "wieght = 2")
    );
    let (code, stderr) = check_exit(&toml);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        positions(&stderr),
        ["2:1", "3:1", "6:1", "13:1", "16:1"],
        "{stderr}"
    );
    for (line, column, key) in [
        (2, 1, "foo"),
        (3, 1, "bar"),
        (6, 1, "baz"),
        (13, 1, "balanse"),
        (16, 1, "wieght"),
    ] {
        assert_points_at(&stderr, line, column, &format!("unknown key \"{key}\""));
    }
}

#[test]
fn unknown_key_type_error_and_bad_value_are_all_reported() {
    let toml = base("colour = \"blue\"\nmax_fails = \"x\"", "weight = 0");
    let (code, stderr) = check_exit(&toml);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(positions(&stderr), ["6:1", "7:13", "10:10"], "{stderr}");
    assert_points_at(&stderr, 6, 1, "unknown key \"colour\"");
    assert_points_at(&stderr, 7, 13, "invalid type: string \"x\"");
    assert_points_at(&stderr, 10, 10, "weight = 0 is out of range");
}

#[test]
fn a_required_key_of_the_wrong_type_is_reported_once() {
    let toml = base("", "").replace("address = \"127.0.0.1:9\"", "address = 9");
    let (code, stderr) = check_exit(&toml);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(positions(&stderr), ["8:11"], "{stderr}");
    assert_points_at(
        &stderr,
        8,
        11,
        "invalid type: integer `9`, expected a string",
    );
}

/// A table without its required key is reported missing it, and its other
/// keys are still checked: one forgotten `address` or `upstream` hides
/// nothing else.
#[test]
fn a_table_missing_a_required_key_still_has_its_other_keys_checked() {
    let toml = format!(
        "[[listener]]\n\
         listen = \"127.0.0.1:{}\"\n\
         upstream = \"web\"\n\
         [[listener.route]]\n\
         path_prefix = \"v1\"\n\
         \n\
         [upstream.web]\n\
         [[upstream.web.server]]\n\
         weight = 0\n\
         max_conns = -3\n\
         [[upstream.web.server]]\n\
         address = 9\n",
        free_port()
    );
    let stderr = refused(&toml);
    assert_eq!(
        positions(&stderr),
        ["4:1", "5:15", "8:1", "9:10", "10:13", "12:11"],
        "{stderr}"
    );
    assert_points_at(&stderr, 4, 1, "missing required key \"upstream\"");
    assert_points_at(&stderr, 5, 15, "must start with \"/\"");
    assert_points_at(&stderr, 8, 1, "missing required key \"address\"");
    assert_points_at(&stderr, 9, 10, "weight = 0");
    assert_points_at(&stderr, 10, 13, "max_conns = -3");
    // Rejected for its type: not reported again as missing.
    assert_points_at(&stderr, 12, 11, "invalid type");
}

/// Certificate, key and CA files that cannot be read are reported at the
/// keys naming them, beside the file's other problems; a certificate that
/// reads but holds none is placed at its key too.
#[test]
fn unusable_tls_files_are_reported_at_the_keys_naming_them() {
    let config = |cert: &str, bogus: &str| {
        format!(
            "[[listener]]\n\
             listen = \"127.0.0.1:{}\"\n\
             upstream = \"web\"\n\
             {bogus}\n\
             [listener.tls]\n\
             cert = \"{cert}\"\n\
             key = \"/nonexistent/site.key\"\n\
             \n\
             [upstream.web]\n\
             tls = true\n\
             ca = \"/nonexistent/ca.pem\"\n\
             [[upstream.web.server]]\n\
             address = \"127.0.0.1:9\"\n",
            free_port()
        )
    };
    let stderr = refused(&config("/nonexistent/site.pem", "bogus = 1"));
    assert_eq!(
        positions(&stderr),
        ["4:1", "6:8", "7:7", "11:6"],
        "{stderr}"
    );
    assert_points_at(&stderr, 4, 1, "unknown key");
    assert_points_at(
        &stderr,
        6,
        8,
        "cannot read certificate file /nonexistent/site.pem",
    );
    assert_points_at(
        &stderr,
        7,
        7,
        "cannot read private key file /nonexistent/site.key",
    );
    assert_points_at(&stderr, 11, 6, "cannot read ca bundle /nonexistent/ca.pem");

    let junk = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(junk.path(), "not a certificate\n").unwrap();
    let junk = junk.path().display().to_string();
    let key = tempfile::NamedTempFile::new().unwrap();
    let stderr = refused(
        &config(&junk, "")
            .replace("/nonexistent/site.key", &key.path().display().to_string())
            .replace("tls = true\nca = \"/nonexistent/ca.pem\"\n", ""),
    );
    let words = format!("{junk} holds no pem certificate").to_lowercase();
    assert_points_at(&stderr, 6, 8, &words);
}

#[test]
fn a_syntax_error_is_reported_alone() {
    let toml = "[global]\nfoo = 1\n[[listener]\nlisten = 5\n";
    let (code, stderr) = check_exit(toml);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(positions(&stderr), ["3:11"], "{stderr}");
}

#[test]
fn syntax_error_has_a_position() {
    let stderr = refused("[[listener]]\nlisten = \"127.0.0.1:1\n");
    assert!(stderr.contains("sluice.toml:2:"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_a_bad_config_exits_1() {
    let toml = base("", "weight = 0");
    let mut proxy = Proxy::spawn(&toml);
    let status = proxy
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("sluice run exits on a bad config");
    assert_eq!(status.code(), Some(1), "{}", proxy.stderr());
    // stderr is read by a thread that may lag the exit a little.
    poll_until(
        Duration::from_secs(30),
        "stderr names the file",
        async || proxy.stderr().contains("sluice.toml:"),
    )
    .await;
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let output = Command::new(BIN)
        .args(["check", "-c", "/nonexistent/sluice.toml"])
        .stdin(Stdio::null())
        .output()
        .expect("run sluice check");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/sluice.toml"));
}

/// Every file in `config/` passes `sluice check`, in place, run from the
/// repository root as a user would (certificates included).
#[test]
fn every_example_config_passes_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("config")).expect("config/ exists") {
        let path = entry.expect("read config/").path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let output = Command::new(BIN)
            .arg("check")
            .arg("-c")
            .arg(&path)
            .current_dir(root)
            .stdin(Stdio::null())
            .output()
            .expect("run sluice check");
        assert!(
            output.status.success(),
            "{} failed check:\n{}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} example configs found");
}

#[test]
fn version_and_help() {
    let version = Command::new(BIN)
        .arg("--version")
        .output()
        .expect("run sluice");
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
    let help = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("run sluice");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    for command in ["run", "check", "demo"] {
        assert!(help.contains(command), "{help}");
    }
}

/// Every key path of a TOML document, arrays of tables flattened and
/// upstream names replaced by `NAME`: `upstream.NAME.server.weight`.
fn key_paths(table: &toml::Table, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
    for (key, value) in table {
        let path = match prefix {
            "" => key.clone(),
            "upstream" => "upstream.NAME".to_owned(),
            _ => format!("{prefix}.{key}"),
        };
        match value {
            toml::Value::Table(inner) => key_paths(inner, &path, out),
            toml::Value::Array(items)
                if items.iter().all(toml::Value::is_table) && !items.is_empty() =>
            {
                for item in items.iter().filter_map(toml::Value::as_table) {
                    key_paths(item, &path, out);
                }
            }
            _ => {
                out.insert(path);
            }
        }
    }
}

/// The README's configuration reference and `config/full.toml` (which sets
/// every key, and passes `check`, so every key in it is real) name the same
/// keys: the reference cannot drift from the schema.
#[test]
fn configuration_reference_matches_the_schema() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let section = readme
        .split("## Configuration reference")
        .nth(1)
        .expect("a Configuration reference section")
        .split("\n## ")
        .next()
        .unwrap_or_default();
    let documented: std::collections::BTreeSet<String> = section
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .map(str::to_owned)
        .collect();

    let full = std::fs::read_to_string(root.join("config/full.toml")).expect("config/full.toml");
    let full: toml::Table = full.parse().expect("full.toml is TOML");
    let mut schema = std::collections::BTreeSet::new();
    key_paths(&full, "", &mut schema);

    let undocumented: Vec<_> = schema.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&schema).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "keys in config/full.toml missing from the reference: {undocumented:?}\n\
         keys in the reference that config/full.toml does not set: {unknown:?}"
    );
}
