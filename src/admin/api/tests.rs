use super::*;

fn config(drain_b: bool) -> crate::config::Config {
    let text = format!(
        "[[listener]]\nlisten = \"127.0.0.1:18080\"\nupstream = \"web\"\n\
             [[upstream.web.server]]\naddress = \"127.0.0.1:19001\"\n\
             [[upstream.web.server]]\naddress = \"127.0.0.1:19002\"\ndrain = {drain_b}\n"
    );
    crate::config::parse(&text, std::path::Path::new("test.toml")).unwrap()
}

fn state_of(shared: &Shared, address: &str) -> String {
    let snapshot = shared.load();
    let up = snapshot.upstream("web").unwrap();
    find_server(up, address)
        .unwrap()
        .status(clock::now_ms())
        .as_str()
        .to_owned()
}

#[test]
fn api_changes_survive_reloads_until_the_file_changes_that_server() {
    let shared = Shared::new(config(false), Default::default());
    let (status, _) = server_action(
        &shared,
        None,
        "web",
        "127.0.0.1:19001",
        Action::Disable,
        None,
    );
    assert_eq!(status, StatusCode::OK);
    server_action(
        &shared,
        None,
        "web",
        "127.0.0.1:19002",
        Action::Drain,
        Some("deadline=10m"),
    );
    assert_eq!(state_of(&shared, "127.0.0.1:19001"), "down");
    assert_eq!(state_of(&shared, "127.0.0.1:19002"), "drained");

    // The same file again: the operator's changes stay.
    shared.swap(config(false), Default::default());
    assert_eq!(state_of(&shared, "127.0.0.1:19001"), "down");
    assert_eq!(state_of(&shared, "127.0.0.1:19002"), "drained");

    // The file now sets server 2's drain itself (to true, then false):
    // from there on the file decides it; server 1 keeps its override.
    shared.swap(config(true), Default::default());
    assert_eq!(state_of(&shared, "127.0.0.1:19002"), "drained");
    shared.swap(config(false), Default::default());
    assert_eq!(state_of(&shared, "127.0.0.1:19002"), "up");
    assert_eq!(state_of(&shared, "127.0.0.1:19001"), "down");
}

fn weight_of(shared: &Shared, address: &str) -> u32 {
    let snapshot = shared.load();
    find_server(snapshot.upstream("web").unwrap(), address)
        .unwrap()
        .cfg
        .weight
        .get()
}

#[test]
fn a_runtime_weight_lasts_until_the_file_changes_that_weight() {
    let shared = Shared::new(config(false), Default::default());
    let (status, body) = set_weight(&shared, None, "web", "127.0.0.1:19001", Some("value=5"));
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["weight"], 5);
    assert_eq!(weight_of(&shared, "127.0.0.1:19001"), 5);
    let balancers_see_it = shared.load().upstream("web").unwrap().cfg.servers[0].weight;
    assert_eq!(balancers_see_it.get(), 5);

    shared.swap(config(false), Default::default());
    assert_eq!(
        weight_of(&shared, "127.0.0.1:19001"),
        5,
        "a reload keeps it"
    );

    let mut reweighted = config(false);
    reweighted.upstreams[0].servers[0].weight = NonZeroU32::new(2).unwrap();
    shared.swap(reweighted.clone(), Default::default());
    assert_eq!(weight_of(&shared, "127.0.0.1:19001"), 2, "the file wins");
    shared.swap(reweighted, Default::default());
    assert_eq!(weight_of(&shared, "127.0.0.1:19001"), 2);

    for bad in [None, Some("value=0"), Some("value=x")] {
        assert_eq!(
            set_weight(&shared, None, "web", "127.0.0.1:19001", bad).0,
            StatusCode::BAD_REQUEST
        );
    }
}

#[test]
fn unknown_targets_and_bad_deadlines_are_refused() {
    let shared = Shared::new(config(false), Default::default());
    let not_found = |u, a| server_action(&shared, None, u, a, Action::Drain, None).0;
    assert_eq!(not_found("api", "127.0.0.1:19001"), StatusCode::NOT_FOUND);
    assert_eq!(not_found("web", "127.0.0.1:1"), StatusCode::NOT_FOUND);
    let bad = server_action(
        &shared,
        None,
        "web",
        "127.0.0.1:19001",
        Action::Drain,
        Some("deadline=soon"),
    );
    assert_eq!(bad.0, StatusCode::BAD_REQUEST);
    assert_eq!(state_of(&shared, "127.0.0.1:19001"), "up");
}

#[test]
fn rfc3339_formats_utc() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
    assert_eq!(rfc3339(1_795_000_000_000), "2026-11-18T11:06:40.000Z");
}

#[test]
fn percent_decode_handles_ports_and_ipv6() {
    assert_eq!(
        percent_decode("127.0.0.1%3A9001").as_deref(),
        Some("127.0.0.1:9001")
    );
    assert_eq!(
        percent_decode("%5B%3A%3A1%5D%3A80").as_deref(),
        Some("[::1]:80")
    );
    assert_eq!(percent_decode("[::1]:80").as_deref(), Some("[::1]:80"));
    assert_eq!(percent_decode("%3").as_deref(), None);
    assert_eq!(percent_decode("%zz").as_deref(), None);
}

#[test]
fn query_param_finds_the_deadline() {
    assert_eq!(
        query_param(Some("a=1&deadline=10m"), "deadline").as_deref(),
        Some("10m")
    );
    assert_eq!(
        query_param(Some("deadline=1%20s"), "deadline").as_deref(),
        Some("1 s")
    );
    assert_eq!(query_param(None, "deadline"), None);
}

#[tokio::test]
async fn an_idle_disabled_server_is_down_not_drained() {
    let shared = Shared::new(config(false), Default::default());
    server_action(
        &shared,
        None,
        "web",
        "127.0.0.1:19002",
        Action::Disable,
        None,
    );
    let (status, body) = drained(&shared, "web", "127.0.0.1:19002", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["state"], "down");
    assert_eq!(body["drained"], false);

    server_action(&shared, None, "web", "127.0.0.1:19002", Action::Drain, None);
    let (status, body) = drained(&shared, "web", "127.0.0.1:19002", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "drained");
}
