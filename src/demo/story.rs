//! The steps `sluice demo` prints at start-up: the stateful-server story,
//! each step with the exact commands for this run's addresses and token.

use std::fmt;
use std::net::SocketAddr;

use super::backend::{RESTART_AFTER, SESSION_COOKIE};
use super::reachable;
use crate::config::Config;

/// Where the commands keep the cookies, so they act like one browser.
const JAR: &str = "/tmp/sluice-demo.jar";

pub struct Story<'a> {
    pub config: &'a Config,
    /// Each backend's name and address.
    pub backends: &'a [(String, SocketAddr)],
    pub token_generated: bool,
}

impl Story<'_> {
    /// What `--backends-only` prints: the backends, nothing to try here.
    pub fn backends_only(&self) -> String {
        let mut out = format!(
            "sluice demo: {} stateful backends, no proxy\n",
            self.backends.len()
        );
        for (name, addr) in self.backends {
            out.push_str(&format!("  {name} on {addr}\n"));
        }
        out.push_str("Stop with Ctrl-C.\n");
        out
    }
}

impl fmt::Display for Story<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proxy = format!("http://{}", reachable(self.config.listeners[0].listen));
        let upstream = &self.config.upstreams[0];
        let sticky = upstream
            .sticky
            .as_ref()
            .map_or("the sticky cookie", |s| s.cookie.as_str());
        let (admin, token) = match &self.config.admin {
            Some(admin) => (
                format!("http://{}", reachable(admin.listen)),
                admin.token.as_deref(),
            ),
            None => (String::new(), None),
        };
        let auth = token.map_or(String::new(), |t| {
            format!(" -H 'Authorization: Bearer {t}'")
        });
        let server = self.backends.first().map_or(String::new(), |(_, addr)| {
            format!("{admin}/api/upstreams/{}/servers/{addr}", upstream.name)
        });
        let browser = format!("curl -s -b {JAR} -c {JAR}");

        writeln!(
            f,
            "sluice demo: the proxy on {proxy}/ in front of {} stateful backends",
            self.backends.len()
        )?;
        for (name, addr) in self.backends {
            writeln!(f, "  {name} on {addr}")?;
        }
        write!(f, "  dashboard and admin API on {admin}/")?;
        match token {
            Some(token) if self.token_generated => writeln!(
                f,
                " (admin token: {token}, made up for this run; --token sets one)"
            )?,
            Some(token) => writeln!(f, " (admin token: {token})")?,
            None => writeln!(f)?,
        }
        writeln!(f)?;
        writeln!(
            f,
            "Each backend keeps your visits in its own memory, under a session cookie it\n\
             sets ({SESSION_COOKIE}); sluice's sticky cookie ({sticky}) brings you back to the\n\
             backend that has them. The story, step by step:"
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "1. Stay on one server. Repeat this: the same backend answers, the visit count grows.\n\
             \x20    {browser} {proxy}/\n\
             \x20  Without the cookies every request is balanced anew (round-robin):\n\
             \x20    for i in $(seq 6); do curl -s {proxy}/; done"
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "2. Take your server out. Disable the backend your reply named (here the first),\n\
             \x20  then ask again: another backend answers, sluice rewrites its cookie (see\n\
             \x20  Set-Cookie) and the count starts over: the visits stayed behind in the\n\
             \x20  first backend's memory. Enable it again afterwards.\n\
             \x20    curl -s -X POST{auth} {server}/disable\n\
             \x20    {browser} -i {proxy}/\n\
             \x20    curl -s -X POST{auth} {server}/enable"
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "3. Drain a server. It keeps the users bound to it and gets no new ones; once\n\
             \x20  nothing is in flight and no WebSocket is open it is drained, safe to remove.\n\
             \x20    curl -s -X POST{auth} {server}/drain\n\
             \x20    curl -s{auth} '{server}/drained?wait=60s'\n\
             \x20    curl -s -X POST{auth} {server}/enable"
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "4. Crash your backend. It closes its connections, forgets every session and comes\n\
             \x20  back empty {} s later. Your next request moves to another backend with a new\n\
             \x20  sticky cookie; the health checks take the crashed one out, then bring it back.\n\
             \x20    {browser} -X POST {proxy}/crash\n\
             \x20    {browser} -i {proxy}/\n\
             \x20    curl -s{auth} {admin}/api/status",
            RESTART_AFTER.as_secs()
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "5. Open a WebSocket to ws://{}/ws (it echoes what you send): it shows up as a\n\
             \x20  tunnel, and keeps a draining backend from being drained until it closes.",
            reachable(self.config.listeners[0].listen)
        )?;
        writeln!(f)?;
        writeln!(f, "Watch it all on the dashboard: {admin}/")?;
        writeln!(f, "Stop with Ctrl-C.")
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Demo, Options};
    use super::*;

    fn story_text(options: Options) -> String {
        let demo = Demo::prepare(options).unwrap();
        let backends: Vec<_> = demo
            .backends
            .iter()
            .map(|b| (b.name.clone(), b.addr))
            .collect();
        Story {
            config: &demo.config,
            backends: &backends,
            token_generated: demo.token_generated,
        }
        .to_string()
    }

    #[test]
    fn the_commands_carry_the_admin_token() {
        let text = story_text(Options {
            listen: "0.0.0.0:18080".parse().unwrap(),
            admin: "0.0.0.0:19900".parse().unwrap(),
            token: Some("s3cret".to_owned()),
            backend_port: 0,
            ..Options::default()
        });
        assert!(text.contains("http://127.0.0.1:18080/"), "{text}");
        assert!(
            text.contains("curl -s -X POST -H 'Authorization: Bearer s3cret' http://127.0.0.1:19900/api/upstreams/demo/servers/127.0.0.1:"),
            "{text}"
        );
        assert!(text.contains("(admin token: s3cret)"), "{text}");
        for step in ["1. ", "2. ", "3. ", "4. ", "5. "] {
            assert!(text.contains(step), "{text}");
        }
    }

    #[test]
    fn without_a_token_the_commands_have_no_header() {
        let text = story_text(Options {
            listen: "127.0.0.1:18081".parse().unwrap(),
            admin: "127.0.0.1:19901".parse().unwrap(),
            backend_port: 0,
            ..Options::default()
        });
        assert!(!text.contains("Authorization"), "{text}");
        assert!(text.contains("/disable"), "{text}");
        assert!(
            text.contains("-X POST http://127.0.0.1:18081/crash"),
            "{text}"
        );
    }
}
