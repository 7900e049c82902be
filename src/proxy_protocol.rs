//! The PROXY protocol (versions 1 and 2, haproxy's `proxy-protocol.txt`):
//! the header a TCP proxy such as HAProxy (`send-proxy`, `send-proxy-v2`) or
//! an AWS NLB writes before the client's bytes, naming the client it relays.
//!
//! This module detects, reads and parses that header; the server asks for it
//! only on connections from `trusted_proxies`. Both signatures are safe to
//! detect on a listener that also takes plain connections: `PROXY ` starts
//! no HTTP/2 preface or TLS record (a ClientHello starts with 0x16), and the
//! binary one has a NUL byte in its first five, which no HTTP/1.x request
//! (not even one after an empty line) can.

use std::io;
use std::net::{AddrParseError, IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// What starts a version 1 header.
const V1_SIGNATURE: &[u8] = b"PROXY ";
/// The longest version 1 header, CRLF included (`PROXY UNKNOWN` with two
/// full IPv6 addresses and ports).
pub const V1_MAX_LEN: usize = 107;
/// What starts a version 2 header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version/command, family/transport and the 2-byte length.
const V2_FIXED_LEN: usize = 16;
/// Address bytes of the families sluice reads (addresses, then ports).
const V2_INET_LEN: usize = 12;
const V2_INET6_LEN: usize = 36;
/// How often a connection whose first bytes are only the beginning of a
/// signature is looked at again: `peek` returns at once while any byte is
/// waiting, so waiting for the rest needs a pause.
const PARTIAL_SIGNATURE_RETRY: Duration = Duration::from_millis(5);

#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("no PROXY protocol signature")]
    Signature,
    #[error("PROXY v1 header longer than {V1_MAX_LEN} bytes")]
    V1TooLong,
    #[error("PROXY v1 header does not end with CRLF")]
    V1NoCrlf,
    #[error("PROXY v1 header is not ASCII text")]
    V1NotText,
    #[error("PROXY v1 header: unknown protocol {0:?} (TCP4, TCP6 or UNKNOWN)")]
    V1Protocol(String),
    #[error("PROXY v1 header: {0} fields after the protocol, expected 4")]
    V1Fields(usize),
    #[error("PROXY v1 header: bad address {value:?}: {source}")]
    V1Address {
        value: String,
        #[source]
        source: AddrParseError,
    },
    #[error("PROXY v1 header: address {0} does not match the protocol")]
    V1Family(IpAddr),
    #[error("PROXY v1 header: bad port {0:?}")]
    V1Port(String),
    #[error("PROXY v2 header: version {0}, expected 2")]
    V2Version(u8),
    #[error("PROXY v2 header: unknown command {0:#x}")]
    V2Command(u8),
    #[error("PROXY v2 header: unknown address family or transport {0:#04x}")]
    V2Family(u8),
    #[error("PROXY v2 header: {len} address bytes, the family needs {needed}")]
    V2Short { len: usize, needed: usize },
    #[error("PROXY v2 header: length field says {expected} bytes, got {got}")]
    V2Length { expected: usize, got: usize },
    #[error("connection closed inside the PROXY header")]
    Truncated,
    #[error("reading the PROXY header: {0}")]
    Io(#[from] io::Error),
}

/// A parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The proxy relays a TCP connection from `source` to `destination`.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// The proxy's own connection (v2 `LOCAL`, e.g. its health checks) or one
    /// it cannot describe (v1 `UNKNOWN`, v2 `UNSPEC` or `UNIX`): the spec
    /// says to keep the real connection's addresses.
    Local,
}

impl Header {
    /// The client address the connection stands for: the relayed source,
    /// or `peer` itself.
    pub fn client(&self, peer: SocketAddr) -> SocketAddr {
        match self {
            Header::Proxied { source, .. } => *source,
            Header::Local => peer,
        }
    }
}

/// What the first bytes of a connection are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    V1,
    V2,
    /// Not a PROXY header: the bytes belong to the application protocol.
    NotProxy,
    /// Too few bytes to tell: they are the beginning of a signature.
    NeedMore,
}

/// Classifies the first bytes of a connection.
pub fn detect(prefix: &[u8]) -> Detected {
    for (signature, version) in [(V1_SIGNATURE, Detected::V1), (V2_SIGNATURE, Detected::V2)] {
        let n = prefix.len().min(signature.len());
        if prefix[..n] == signature[..n] {
            return if n == signature.len() {
                version
            } else {
                Detected::NeedMore
            };
        }
    }
    Detected::NotProxy
}

/// Reads a PROXY header if the connection starts with one, consuming exactly
/// its bytes, and leaves the stream untouched otherwise (`Ok(None)`, also
/// when the peer closes before sending anything). The caller bounds the wait.
pub async fn read_header(stream: &mut TcpStream) -> Result<Option<Header>, ProxyHeaderError> {
    let mut first = [0u8; V2_SIGNATURE.len()];
    loop {
        let n = stream.peek(&mut first).await?;
        if n == 0 {
            return Ok(None);
        }
        match detect(&first[..n]) {
            Detected::NotProxy => return Ok(None),
            Detected::V1 => return read_v1(stream).await.map(Some),
            Detected::V2 => return read_v2(stream).await.map(Some),
            Detected::NeedMore => tokio::time::sleep(PARTIAL_SIGNATURE_RETRY).await,
        }
    }
}

/// Reads up to and including the LF. Bytes are consumed only once peeked
/// and known to be part of the line, so nothing after it is taken.
async fn read_v1(stream: &mut TcpStream) -> Result<Header, ProxyHeaderError> {
    let mut line = Vec::with_capacity(V1_MAX_LEN);
    let mut chunk = [0u8; V1_MAX_LEN];
    while line.len() < V1_MAX_LEN {
        let room = V1_MAX_LEN - line.len();
        let n = stream.peek(&mut chunk[..room]).await?;
        if n == 0 {
            return Err(ProxyHeaderError::Truncated);
        }
        let take = chunk[..n]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(n, |i| i + 1);
        stream.read_exact(&mut chunk[..take]).await?;
        line.extend_from_slice(&chunk[..take]);
        if line.ends_with(b"\n") {
            return parse_v1(&line);
        }
    }
    Err(ProxyHeaderError::V1TooLong)
}

async fn read_v2(stream: &mut TcpStream) -> Result<Header, ProxyHeaderError> {
    let mut header = vec![0u8; V2_FIXED_LEN];
    read_all(stream, &mut header).await?;
    let len = usize::from(u16::from_be_bytes([header[14], header[15]]));
    header.resize(V2_FIXED_LEN + len, 0);
    read_all(stream, &mut header[V2_FIXED_LEN..]).await?;
    parse_v2(&header)
}

async fn read_all(stream: &mut TcpStream, buf: &mut [u8]) -> Result<(), ProxyHeaderError> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(ProxyHeaderError::Truncated),
        Err(e) => Err(e.into()),
    }
}

/// Parses a complete version 1 header, CRLF included.
pub fn parse_v1(line: &[u8]) -> Result<Header, ProxyHeaderError> {
    if line.len() > V1_MAX_LEN {
        return Err(ProxyHeaderError::V1TooLong);
    }
    let text = line
        .strip_suffix(b"\r\n")
        .ok_or(ProxyHeaderError::V1NoCrlf)?;
    let text = std::str::from_utf8(text)
        .ok()
        .filter(|t| t.is_ascii())
        .ok_or(ProxyHeaderError::V1NotText)?;
    let rest = text
        .strip_prefix("PROXY ")
        .ok_or(ProxyHeaderError::Signature)?;
    let (protocol, addresses) = rest.split_once(' ').unwrap_or((rest, ""));
    let v6 = match protocol {
        // Whatever follows UNKNOWN is to be ignored.
        "UNKNOWN" => return Ok(Header::Local),
        "TCP4" => false,
        "TCP6" => true,
        other => return Err(ProxyHeaderError::V1Protocol(other.to_owned())),
    };
    // Single spaces only: `split(' ')` turns a doubled space into an empty
    // field, which then fails to parse.
    let fields: Vec<&str> = addresses.split(' ').collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(ProxyHeaderError::V1Fields(fields.len()));
    };
    let address = |value: &str| -> Result<IpAddr, ProxyHeaderError> {
        let ip: IpAddr = value
            .parse()
            .map_err(|source| ProxyHeaderError::V1Address {
                value: value.to_owned(),
                source,
            })?;
        if ip.is_ipv6() == v6 {
            Ok(ip)
        } else {
            Err(ProxyHeaderError::V1Family(ip))
        }
    };
    Ok(Header::Proxied {
        source: SocketAddr::new(address(src)?, port(sport)?),
        destination: SocketAddr::new(address(dst)?, port(dport)?),
    })
}

/// A decimal port: digits only (no sign), at most five of them.
fn port(value: &str) -> Result<u16, ProxyHeaderError> {
    let bad = || ProxyHeaderError::V1Port(value.to_owned());
    if value.is_empty() || value.len() > 5 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    value.parse().map_err(|_| bad())
}

/// Parses a complete version 2 header: the 16 fixed bytes and exactly the
/// number of bytes their length field announces. TLVs are skipped.
pub fn parse_v2(bytes: &[u8]) -> Result<Header, ProxyHeaderError> {
    let fixed = bytes
        .get(..V2_FIXED_LEN)
        .ok_or(ProxyHeaderError::Truncated)?;
    if fixed[..12] != V2_SIGNATURE[..] {
        return Err(ProxyHeaderError::Signature);
    }
    let version = fixed[12] >> 4;
    if version != 2 {
        return Err(ProxyHeaderError::V2Version(version));
    }
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    let body = &bytes[V2_FIXED_LEN..];
    if body.len() != len {
        return Err(ProxyHeaderError::V2Length {
            expected: len,
            got: body.len(),
        });
    }
    match fixed[12] & 0x0f {
        // LOCAL: the family and the address block are to be ignored.
        0x0 => return Ok(Header::Local),
        0x1 => {}
        command => return Err(ProxyHeaderError::V2Command(command)),
    }
    let family = fixed[13];
    // Transport: UNSPEC, STREAM or DGRAM; sluice only needs the addresses.
    if family & 0x0f > 0x2 {
        return Err(ProxyHeaderError::V2Family(family));
    }
    let needed = match family >> 4 {
        // UNSPEC and UNIX carry no IP address to use.
        0x0 | 0x3 => return Ok(Header::Local),
        0x1 => V2_INET_LEN,
        0x2 => V2_INET6_LEN,
        _ => return Err(ProxyHeaderError::V2Family(family)),
    };
    if len < needed {
        return Err(ProxyHeaderError::V2Short { len, needed });
    }
    let (source, destination) = if needed == V2_INET_LEN {
        let ip = |at: usize| Ipv4Addr::new(body[at], body[at + 1], body[at + 2], body[at + 3]);
        (IpAddr::V4(ip(0)), IpAddr::V4(ip(4)))
    } else {
        let ip = |at: usize| {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[at..at + 16]);
            Ipv6Addr::from(octets)
        };
        (IpAddr::V6(ip(0)), IpAddr::V6(ip(16)))
    };
    let ports = &body[needed - 4..needed];
    Ok(Header::Proxied {
        source: SocketAddr::new(source, u16::from_be_bytes([ports[0], ports[1]])),
        destination: SocketAddr::new(destination, u16::from_be_bytes([ports[2], ports[3]])),
    })
}

#[cfg(test)]
mod tests;
