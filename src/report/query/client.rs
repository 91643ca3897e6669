//! `bpftune -q`: sends one query, reads the reply to end of stream.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;

use super::conn::Conn;
use super::{socket_path, CLIENT_TIMEOUT, PERMISSION_DENIED, REPLY_MAX};

/// Client failures. `main` may map [`ClientError::raw_os_error`] to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{hint}could not connect to {target}: {err}")]
    Connect {
        hint: &'static str,
        target: String,
        err: io::Error,
    },
    #[error("query to {target} failed: {err}")]
    Io { target: String, err: io::Error },
    #[error("bpftune refused the query: permission denied (queries require root, or a daemon started with -p PORT)")]
    PermissionDenied,
    #[error("bpftune at {target} closed the connection without replying")]
    NoReply { target: String },
    #[error("invalid query: {0}")]
    InvalidQuery(&'static str),
}

impl ClientError {
    /// errno of the underlying socket error, if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            ClientError::Connect { err, .. } | ClientError::Io { err, .. } => err.raw_os_error(),
            ClientError::PermissionDenied => Some(libc::EACCES),
            _ => None,
        }
    }
}

fn connect_error(target: String, err: io::Error) -> ClientError {
    let hint = if err.kind() == io::ErrorKind::PermissionDenied {
        "queries require root, or a daemon started with -p PORT; "
    } else {
        "is bpftune running? "
    };
    ClientError::Connect { hint, target, err }
}

fn exchange<C: Conn>(mut c: C, query: &str, target: &str) -> Result<String, ClientError> {
    let io_err = |err: io::Error| ClientError::Io {
        target: target.to_string(),
        err,
    };
    c.set_rto(Some(CLIENT_TIMEOUT)).map_err(io_err)?;
    c.set_wto(Some(CLIENT_TIMEOUT)).map_err(io_err)?;
    let mut req = query.as_bytes().to_vec();
    req.push(0);
    c.write_all(&req).map_err(io_err)?;
    let _ = c.shut_wr();

    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => {
                out.extend_from_slice(&buf[..k]);
                if out.len() >= REPLY_MAX {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A reset after the complete (NUL-terminated) reply is harmless.
            Err(_) if out.contains(&0) => break,
            Err(e) => return Err(io_err(e)),
        }
    }
    if let Some(nul) = out.iter().position(|&b| b == 0) {
        out.truncate(nul);
    } else if out.is_empty() {
        return Err(ClientError::NoReply {
            target: target.to_string(),
        });
    }
    let reply = String::from_utf8_lossy(&out).into_owned();
    if reply == PERMISSION_DENIED {
        return Err(ClientError::PermissionDenied);
    }
    Ok(reply)
}

fn tcp_query(port: u16, query: &str) -> Result<String, ClientError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let target = addr.to_string();
    let s =
        TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT).map_err(|e| connect_error(target.clone(), e))?;
    exchange(s, query, &target)
}

fn unix_query(run_dir: &Path, query: &str) -> Result<String, ClientError> {
    let path = socket_path(run_dir);
    let target = path.display().to_string();
    let s = UnixStream::connect(&path).map_err(|e| connect_error(target.clone(), e))?;
    exchange(s, query, &target)
}

/// Whether a failed Unix-socket query was refused for lack of privilege (the socket is
/// root's alone), as opposed to the daemon not running.
fn refused_for_privilege(e: &ClientError) -> bool {
    match e {
        ClientError::PermissionDenied => true,
        ClientError::Connect { err, .. } => err.kind() == io::ErrorKind::PermissionDenied,
        _ => false,
    }
}

/// The port in the daemon's port file (`"%d\n"`, as C bpftune writes it), if the file
/// holds a usable one.
pub(crate) fn parse_port_file(text: &str) -> Option<u16> {
    text.trim_end_matches('\n')
        .parse::<u16>()
        .ok()
        .filter(|&p| p != 0)
}

/// Sends `query` to the daemon and returns its reply text (without the NUL; the caller
/// prints it followed by `"\n"` like C). With `port`: TCP 127.0.0.1:port; otherwise the
/// Unix socket in `run_dir`. A user other than root cannot use that socket: if the daemon
/// was started with `-p` (it then writes its port file, as C bpftune always did), such a
/// user is served over TCP 127.0.0.1 instead, the way C bpftune's clients — among them
/// the PCP agent, which queries as the `pcp` user — always reached it. Errors are
/// [`ClientError`]s inside the `anyhow::Error`.
pub fn client(run_dir: &Path, port: Option<u16>, query: &str) -> anyhow::Result<String> {
    if query.contains('\0') {
        return Err(ClientError::InvalidQuery("contains a NUL byte").into());
    }
    let reply = match port {
        Some(p) => tcp_query(p, query)?,
        None => match unix_query(run_dir, query) {
            Ok(r) => r,
            Err(e) if refused_for_privilege(&e) => {
                match std::fs::read_to_string(super::port_file_path(run_dir))
                    .ok()
                    .as_deref()
                    .and_then(parse_port_file)
                {
                    Some(p) => tcp_query(p, query)?,
                    None => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        },
    };
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_file_is_read_like_c_writes_it() {
        assert_eq!(parse_port_file("4242\n"), Some(4242));
        assert_eq!(parse_port_file("4242"), Some(4242));
        for bad in ["", "\n", "0\n", "-1\n", "70000\n", "42 \n", "port\n"] {
            assert_eq!(parse_port_file(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_privilege_refusals_fall_back_to_tcp() {
        let connect = |kind| ClientError::Connect {
            hint: "",
            target: String::new(),
            err: io::Error::from(kind),
        };
        assert!(refused_for_privilege(&ClientError::PermissionDenied));
        assert!(refused_for_privilege(&connect(io::ErrorKind::PermissionDenied)));
        assert!(!refused_for_privilege(&connect(io::ErrorKind::NotFound)));
        assert!(!refused_for_privilege(&connect(io::ErrorKind::ConnectionRefused)));
        assert!(!refused_for_privilege(&ClientError::NoReply {
            target: String::new()
        }));
    }
}
