//! Stream sockets with deadlines, shared by the server and the client.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

pub(crate) trait Conn: Read + Write + AsRawFd {
    fn set_rto(&self, d: Option<Duration>) -> io::Result<()>;
    fn set_wto(&self, d: Option<Duration>) -> io::Result<()>;
    fn shut_wr(&self) -> io::Result<()>;
}

impl Conn for UnixStream {
    fn set_rto(&self, d: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(d)
    }
    fn set_wto(&self, d: Option<Duration>) -> io::Result<()> {
        self.set_write_timeout(d)
    }
    fn shut_wr(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl Conn for TcpStream {
    fn set_rto(&self, d: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(d)
    }
    fn set_wto(&self, d: Option<Duration>) -> io::Result<()> {
        self.set_write_timeout(d)
    }
    fn shut_wr(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Time left until `deadline`, or `None` if it has passed.
pub(crate) fn remaining(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}
