//! nginx itself, for differential tests: one process without a master (so
//! killing it leaves no orphaned workers) from a private prefix.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::client::poll_until;

/// One nginx process (no master, so killing it leaves no orphaned workers)
/// running in the foreground from a private prefix.
pub struct Nginx {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn nginx_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file())
}

/// Starts nginx with `http` as the body of its `http {}` block and waits
/// until it accepts on every port in `ports`.
pub async fn start_nginx(binary: &PathBuf, http: &str, ports: &[u16]) -> Nginx {
    let dir = tempfile::tempdir().expect("nginx prefix");
    let d = dir.path().display();
    let conf = format!(
        "master_process off;\n\
         worker_processes 1;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n\
         access_log off;\n\
         client_body_temp_path {d}/body;\n\
         proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n\
         uwsgi_temp_path {d}/uwsgi;\n\
         scgi_temp_path {d}/scgi;\n\
         {http}\n\
         }}\n"
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("write nginx.conf");
    let child = Command::new(binary)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf_path)
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start nginx");
    let nginx = Nginx { child, _dir: dir };
    for &port in ports {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        poll_until(Duration::from_secs(10), "nginx listens", async || {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
    }
    nginx
}
