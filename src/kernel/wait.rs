//! The one event-wait mechanism of the daemon: an epoll set of descriptors, each with a
//! token. The main loop, the query server and the `/run/netns` watcher all use it (a
//! watcher's own set nests in the main loop's, since an epoll descriptor is pollable).

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

pub struct Waiter {
    epoll: Epoll,
}

impl Waiter {
    pub fn new() -> io::Result<Waiter> {
        Ok(Waiter {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
        })
    }

    /// Wakes up with `token` when `fd` is readable.
    pub fn add(&self, fd: &impl AsFd, token: u64) -> io::Result<()> {
        self.add_with(fd.as_fd(), token, EpollFlags::EPOLLIN)
    }

    /// Wakes up with `token` on `flags` (e.g. EPOLLPRI for the mount table).
    pub fn add_with(&self, fd: BorrowedFd<'_>, token: u64, flags: EpollFlags) -> io::Result<()> {
        self.epoll.add(fd, EpollEvent::new(flags, token))?;
        Ok(())
    }

    /// Waits until something is ready or `timeout` passes (`None`: forever); returns the
    /// tokens that are ready (empty on timeout or when a signal interrupted the wait).
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<Vec<u64>> {
        let timeout = match timeout {
            None => EpollTimeout::NONE,
            Some(d) => {
                let ms = u16::try_from(d.as_millis()).unwrap_or(u16::MAX);
                EpollTimeout::from(ms)
            }
        };
        let mut ready = [EpollEvent::empty(); 8];
        match self.epoll.wait(&mut ready, timeout) {
            Ok(n) => Ok(ready[..n].iter().map(EpollEvent::data).collect()),
            Err(Errno::EINTR) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }
}

impl AsFd for Waiter {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::os::unix::net::UnixStream;

    #[test]
    fn reports_ready_tokens_and_timeouts() {
        let w = Waiter::new().expect("epoll");
        let (mut a, b) = UnixStream::pair().expect("pair");
        let (_c, d) = UnixStream::pair().expect("pair");
        w.add(&b, 7).expect("add");
        w.add(&d, 8).expect("add");
        assert!(w.wait(Some(Duration::from_millis(10))).expect("wait").is_empty());
        a.write_all(b"x").expect("write");
        assert_eq!(w.wait(Some(Duration::from_millis(1000))).expect("wait"), vec![7]);
        // Nested: a waiter's own descriptor is readable when one of its members is.
        let outer = Waiter::new().expect("epoll");
        outer.add(&w, 1).expect("nest");
        assert_eq!(
            outer.wait(Some(Duration::from_millis(1000))).expect("wait"),
            vec![1]
        );
    }
}
