//! A typed config builder: one call per listener, upstream and server,
//! rendered as the TOML the binary reads, so a test states only the keys its
//! behaviour depends on.
//!
//! ```ignore
//! let toml = Config::new()
//!     .upstream("web", |u| u.server(&a).server_with(&b, |s| s.set("weight", 5)))
//!     .listener("web")
//!     .toml();
//! ```

use std::fmt::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::proxy::free_port;
use super::upstream::MockUpstream;

/// A value as TOML writes it: text is quoted, numbers and booleans are bare.
pub trait Value {
    fn toml(&self) -> String;
}

impl Value for &str {
    fn toml(&self) -> String {
        format!("{self:?}")
    }
}

impl Value for String {
    fn toml(&self) -> String {
        self.as_str().toml()
    }
}

impl Value for &String {
    fn toml(&self) -> String {
        self.as_str().toml()
    }
}

/// A file path, e.g. a certificate's.
impl Value for &Path {
    fn toml(&self) -> String {
        self.display().to_string().toml()
    }
}

impl Value for &PathBuf {
    fn toml(&self) -> String {
        self.as_path().toml()
    }
}

impl Value for bool {
    fn toml(&self) -> String {
        self.to_string()
    }
}

impl<T: Value, const N: usize> Value for [T; N] {
    fn toml(&self) -> String {
        let items: Vec<String> = self.iter().map(Value::toml).collect();
        format!("[{}]", items.join(", "))
    }
}

macro_rules! bare_values {
    ($($t:ty),*) => {$(
        impl Value for $t {
            fn toml(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
bare_values!(i32, u16, u32, u64, usize, i64, f64);

/// What a `[[upstream.X.server]]` points at: a mock, or an address in text.
pub trait Address {
    fn server_address(&self) -> String;
}

impl Address for &MockUpstream {
    fn server_address(&self) -> String {
        self.address()
    }
}

impl Address for &str {
    fn server_address(&self) -> String {
        (*self).to_owned()
    }
}

impl Address for &String {
    fn server_address(&self) -> String {
        (*self).clone()
    }
}

impl Address for String {
    fn server_address(&self) -> String {
        self.clone()
    }
}

impl Address for SocketAddr {
    fn server_address(&self) -> String {
        self.to_string()
    }
}

/// The keys of one TOML table, in the order they were set.
#[derive(Debug, Clone, Default)]
pub struct Keys(Vec<(String, String)>);

impl Keys {
    pub fn set(mut self, key: &str, value: impl Value) -> Self {
        self.0.push((key.to_owned(), value.toml()));
        self
    }

    fn render(&self, header: &str, out: &mut String) {
        let _ = writeln!(out, "{header}");
        for (key, value) in &self.0 {
            let _ = writeln!(out, "{key} = {value}");
        }
        out.push('\n');
    }
}

/// One `[[listener]]` with its sub-tables, their entries and routes.
#[derive(Debug, Clone)]
pub struct Listener {
    keys: Keys,
    tables: Vec<(String, Keys)>,
    entries: Vec<(String, Keys)>,
    routes: Vec<Keys>,
}

impl Listener {
    pub fn set(mut self, key: &str, value: impl Value) -> Self {
        self.keys = self.keys.set(key, value);
        self
    }

    /// A key of the sub-table `[listener.TABLE]`, e.g. `tls`.
    pub fn table(mut self, table: &str, key: &str, value: impl Value) -> Self {
        set_in(&mut self.tables, table, key, value);
        self
    }

    /// An entry of the array `[[listener.ARRAY]]` under a sub-table, e.g.
    /// `tls.sni`; rendered after the sub-tables.
    pub fn entry(mut self, array: &str, keys: impl FnOnce(Keys) -> Keys) -> Self {
        self.entries.push((array.to_owned(), keys(Keys::default())));
        self
    }

    /// A `[[listener.route]]`, tried in the order added.
    pub fn route(mut self, keys: impl FnOnce(Keys) -> Keys) -> Self {
        self.routes.push(keys(Keys::default()));
        self
    }
}

/// One `[upstream.NAME]` with its servers and sub-tables.
#[derive(Debug, Clone)]
pub struct Upstream {
    name: String,
    keys: Keys,
    tables: Vec<(String, Keys)>,
    servers: Vec<Keys>,
}

impl Upstream {
    pub fn set(mut self, key: &str, value: impl Value) -> Self {
        self.keys = self.keys.set(key, value);
        self
    }

    /// A key of the sub-table `[upstream.NAME.TABLE]`, e.g. `sticky`.
    pub fn table(mut self, table: &str, key: &str, value: impl Value) -> Self {
        set_in(&mut self.tables, table, key, value);
        self
    }

    /// The sub-table `[upstream.NAME.TABLE]` with the keys `keys` sets.
    pub fn table_with(mut self, table: &str, keys: impl FnOnce(Keys) -> Keys) -> Self {
        self.tables.push((table.to_owned(), keys(Keys::default())));
        self
    }

    pub fn server(self, address: impl Address) -> Self {
        self.server_with(address, |s| s)
    }

    pub fn servers(self, mocks: &[&MockUpstream]) -> Self {
        mocks.iter().fold(self, |u, mock| u.server(*mock))
    }

    /// A server with keys of its own: `weight`, `backup`, `down`, ...
    pub fn server_with(mut self, address: impl Address, keys: impl FnOnce(Keys) -> Keys) -> Self {
        let server = Keys::default().set("address", address.server_address());
        self.servers.push(keys(server));
        self
    }
}

/// A whole config file.
#[derive(Debug, Clone, Default)]
pub struct Config {
    tables: Vec<(String, Keys)>,
    listeners: Vec<Listener>,
    upstreams: Vec<Upstream>,
    tail: String,
}

impl Config {
    pub fn new() -> Self {
        Self::default()
    }

    /// A listener in front of upstream `web`, which holds `servers`: the
    /// config of every test that needs no more.
    pub fn web(servers: &[&MockUpstream]) -> Self {
        Self::new()
            .listener("web")
            .upstream("web", |u| u.servers(servers))
    }

    /// A key of a top-level table: `global`, `log`, `admin`, ...
    pub fn set(mut self, table: &str, key: &str, value: impl Value) -> Self {
        set_in(&mut self.tables, table, key, value);
        self
    }

    pub fn global(self, key: &str, value: impl Value) -> Self {
        self.set("global", key, value)
    }

    /// Loopback peers trusted to say who the client is (X-Forwarded-For,
    /// the PROXY protocol).
    pub fn trusting_loopback(self) -> Self {
        self.global("trusted_proxies", ["127.0.0.1/32"])
    }

    /// The admin API on a free loopback port.
    pub fn admin(self) -> Self {
        self.set("admin", "listen", format!("127.0.0.1:{}", free_port()))
    }

    /// A listener on a free loopback port whose default upstream is `upstream`.
    pub fn listener(self, upstream: &str) -> Self {
        self.listener_with(|l| l.set("upstream", upstream))
    }

    /// A listener on a free loopback port (unless `keys` sets `listen`).
    pub fn listener_with(mut self, keys: impl FnOnce(Listener) -> Listener) -> Self {
        let mut listener = keys(Listener {
            keys: Keys::default(),
            tables: Vec::new(),
            entries: Vec::new(),
            routes: Vec::new(),
        });
        // Fixed here, not at rendering, so every rendering listens alike.
        if !listener.keys.0.iter().any(|(key, _)| key == "listen") {
            let listen = format!("127.0.0.1:{}", free_port()).toml();
            listener.keys.0.insert(0, ("listen".to_owned(), listen));
        }
        self.listeners.push(listener);
        self
    }

    pub fn upstream(mut self, name: &str, build: impl FnOnce(Upstream) -> Upstream) -> Self {
        self.upstreams.push(build(Upstream {
            name: name.to_owned(),
            keys: Keys::default(),
            tables: Vec::new(),
            servers: Vec::new(),
        }));
        self
    }

    /// Text appended as it is: for configs the schema must refuse, which a
    /// typed builder cannot say.
    pub fn raw(mut self, toml: &str) -> Self {
        self.tail.push_str(toml);
        self
    }

    pub fn toml(&self) -> String {
        let mut out = String::new();
        for (name, keys) in &self.tables {
            keys.render(&format!("[{name}]"), &mut out);
        }
        for listener in &self.listeners {
            listener.keys.render("[[listener]]", &mut out);
            for (table, keys) in &listener.tables {
                keys.render(&format!("[listener.{table}]"), &mut out);
            }
            for (array, keys) in &listener.entries {
                keys.render(&format!("[[listener.{array}]]"), &mut out);
            }
            for route in &listener.routes {
                route.render("[[listener.route]]", &mut out);
            }
        }
        for upstream in &self.upstreams {
            let name = &upstream.name;
            upstream
                .keys
                .render(&format!("[upstream.{name}]"), &mut out);
            for (table, keys) in &upstream.tables {
                keys.render(&format!("[upstream.{name}.{table}]"), &mut out);
            }
            for server in &upstream.servers {
                server.render(&format!("[[upstream.{name}.server]]"), &mut out);
            }
        }
        out.push_str(&self.tail);
        out
    }
}

/// Sets `key` in the named sub-table, adding the table on first use.
fn set_in(tables: &mut Vec<(String, Keys)>, table: &str, key: &str, value: impl Value) {
    match tables.iter_mut().find(|(name, _)| name == table) {
        Some((_, keys)) => *keys = std::mem::take(keys).set(key, value),
        None => tables.push((table.to_owned(), Keys::default().set(key, value))),
    }
}
