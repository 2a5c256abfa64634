//! Where `bench-ess`'s clients dial from: this process's network, or a network namespace that
//! stands in for a pod (`--client-netns`), so that the bytes cross a veth as they do between the
//! node's kess and executors in pods on Kubernetes. A socket keeps the namespace it was made in,
//! so only the connect runs on a thread moved into the namespace; the socket is then used from
//! anywhere.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::OnceLock;

use nix::sched::{setns, CloneFlags};

static CLIENT_NETNS: OnceLock<PathBuf> = OnceLock::new();

/// Makes every later client connection dial from the network namespace `name`
/// (`/var/run/netns/<name>`, as `ip netns add` makes it).
pub fn dial_from_netns(name: &str) -> io::Result<()> {
    let path = PathBuf::from("/var/run/netns").join(name);
    File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    CLIENT_NETNS
        .set(path)
        .map_err(|_| io::Error::other("the client network namespace is already set"))
}

/// A blocking connection to `addr` from the clients' network.
pub fn connect_std(addr: SocketAddr) -> io::Result<TcpStream> {
    let Some(path) = CLIENT_NETNS.get() else {
        return TcpStream::connect(addr);
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(File::open(path)?, CloneFlags::CLONE_NEWNET)?;
            TcpStream::connect(addr)
        })
        .join()
        .map_err(|_| io::Error::other("the dialling thread panicked"))?
    })
}

/// An async connection to `addr` from the clients' network.
pub async fn connect(addr: SocketAddr) -> io::Result<tokio::net::TcpStream> {
    if CLIENT_NETNS.get().is_none() {
        return tokio::net::TcpStream::connect(addr).await;
    }
    let socket = tokio::task::spawn_blocking(move || connect_std(addr))
        .await
        .map_err(io::Error::other)??;
    socket.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(socket)
}
