//! Differential tests against nginx itself: the same server list behind
//! nginx and behind sluice, the same clients and keys through both, and the
//! same server must answer every time. Skipped (and passing, with a printed
//! note) when no `nginx` binary is on PATH; CI installs one.

mod support;

use std::net::{IpAddr, Ipv4Addr};

use support::{client::*, config::*, nginx::*, proxy::*, upstream::*};

/// Four servers with uneven weights and one down, the same for both proxies.
struct Servers {
    mocks: Vec<MockUpstream>,
}

const WEIGHTS: [u32; 4] = [1, 2, 1, 3];
const DOWN: usize = 2;

impl Servers {
    async fn start() -> Servers {
        let mut mocks = Vec::new();
        for name in ["a", "b", "c", "d"] {
            mocks.push(MockUpstream::named(name).start().await);
        }
        Servers { mocks }
    }

    fn nginx_upstream(&self, name: &str, method: &str) -> String {
        let servers: String = self
            .mocks
            .iter()
            .enumerate()
            .map(|(k, m)| {
                let down = if k == DOWN { " down" } else { "" };
                format!("server {} weight={}{down};\n", m.address(), WEIGHTS[k])
            })
            .collect();
        format!("upstream {name} {{\n{method};\n{servers}}}\n")
    }

    /// The same servers as sluice's upstream `u`, with the keys `keys` sets.
    fn sluice_config(&self, keys: impl FnOnce(Upstream) -> Upstream) -> Config {
        Config::new().listener("u").upstream("u", |u| {
            self.mocks.iter().enumerate().fold(keys(u), |u, (k, m)| {
                u.server_with(m, |s| s.set("weight", WEIGHTS[k]).set("down", k == DOWN))
            })
        })
    }
}

/// Runs nginx and sluice side by side for one method: returns both URLs'
/// bases (nginx, sluice) and the running processes.
async fn side_by_side(
    servers: &Servers,
    nginx_method: &str,
    sluice_keys: impl FnOnce(Upstream) -> Upstream,
) -> Option<(Nginx, Proxy, String, String)> {
    let Some(binary) = nginx_binary() else {
        println!(
            "SKIPPED: no nginx on PATH (apt-get install nginx-light to run this differential test)"
        );
        return None;
    };
    let nginx_port = free_port();
    let http = format!(
        "{}server {{ listen 127.0.0.1:{nginx_port}; location / {{ proxy_pass http://u; }} }}\n",
        servers.nginx_upstream("u", nginx_method)
    );
    let nginx = start_nginx(&binary, &http, &[nginx_port]).await;
    let sluice = Proxy::start(&servers.sluice_config(sluice_keys).toml()).await;
    let sluice_url = format!("http://{}", sluice.addr());
    Some((
        nginx,
        sluice,
        format!("http://127.0.0.1:{nginx_port}"),
        sluice_url,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_hash_picks_what_nginx_picks() {
    let servers = Servers::start().await;
    let Some((_nginx, _sluice, nginx, sluice)) =
        side_by_side(&servers, "ip_hash", |u| u.set("balance", "ip_hash")).await
    else {
        return;
    };
    let mut spread = std::collections::BTreeSet::new();
    for n in 0u8..60 {
        let client = IpAddr::V4(Ipv4Addr::new(127, n / 8, n.wrapping_mul(37), 1 + n % 5));
        let want = get_from(client, &format!("{nginx}/"))
            .await
            .served_by()
            .to_owned();
        let got = get_from(client, &format!("{sluice}/"))
            .await
            .served_by()
            .to_owned();
        assert_eq!(
            got, want,
            "client {client}: sluice chose {got}, nginx {want}"
        );
        spread.insert(want);
    }
    assert!(
        spread.len() >= 2,
        "the clients should not all hash alike: {spread:?}"
    );
}

/// Sends the same 150 `?key=` values through nginx's `directive` and sluice
/// with `consistent`, and asserts each lands on the same server.
async fn same_choices_for_query_keys(directive: &str, consistent: bool) {
    let servers = Servers::start().await;
    let keys = |u: Upstream| {
        u.set("balance", "hash")
            .set("hash_key", "query:key")
            .set("consistent", consistent)
    };
    let Some((_nginx, _sluice, nginx, sluice)) = side_by_side(&servers, directive, keys).await
    else {
        return;
    };
    let client = Client::new();
    for n in 0..150 {
        let path = format!("/?key=user{n}");
        let want = client
            .get(&format!("{nginx}{path}"))
            .await
            .served_by()
            .to_owned();
        let got = client
            .get(&format!("{sluice}{path}"))
            .await
            .served_by()
            .to_owned();
        assert_eq!(got, want, "key user{n}: sluice chose {got}, nginx {want}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_hash_picks_what_nginx_picks() {
    same_choices_for_query_keys("hash $arg_key", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_picks_what_nginx_picks() {
    same_choices_for_query_keys("hash $arg_key consistent", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_on_client_ip_picks_what_nginx_remote_addr_picks() {
    let servers = Servers::start().await;
    let keys = |u: Upstream| {
        u.set("balance", "hash")
            .set("hash_key", "client_ip")
            .set("consistent", true)
    };
    let Some((_nginx, _sluice, nginx, sluice)) =
        side_by_side(&servers, "hash $remote_addr consistent", keys).await
    else {
        return;
    };
    for n in 0u8..40 {
        let client = IpAddr::V4(Ipv4Addr::new(127, 3, n, 1 + n % 7));
        let want = get_from(client, &format!("{nginx}/"))
            .await
            .served_by()
            .to_owned();
        let got = get_from(client, &format!("{sluice}/"))
            .await
            .served_by()
            .to_owned();
        assert_eq!(
            got, want,
            "client {client}: sluice chose {got}, nginx {want}"
        );
    }
}
