//! The TCP congestion control of the connections that move shuffle bytes.
//!
//! Why a shuffle service has a say: BBR, a common node default, paces every connection, and
//! without an `fq` qdisc the kernel paces with a timer per socket. Between processes of one
//! host, where there is no network to pace for, arming that timer and the softirqs it triggers
//! cost ~40% of the Spark path's CPU on the benchmark VM (README "Performance"). So
//! connections from this node — its host and its pods (`peers.rs`) — get a congestion control
//! that does not pace (`reno`, allowed without privileges), and connections from other hosts
//! keep the node's default (or the operator's choice).
//!
//! The choice is made per listener and per connection: the listener starts every connection
//! with the local algorithm, and a connection from another host is switched to the remote one
//! right after accept. That order matters: BBR turns pacing on when it starts on a connection,
//! and switching away from it later leaves pacing on, while switching to it turns pacing on.

mod peers;
mod routes;

pub use peers::{LocalPeers, PeerLocator, Peers, Reason};

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::socket::{getsockopt, setsockopt, sockopt::TcpCongestion};

const AVAILABLE: &str = "/proc/sys/net/ipv4/tcp_available_congestion_control";
const ALLOWED: &str = "/proc/sys/net/ipv4/tcp_allowed_congestion_control";

#[derive(Debug, thiserror::Error)]
pub enum CongestionError {
    #[error(
        "TCP congestion control {name:?} is not available on this node (available: {available})"
    )]
    Unavailable { name: String, available: String },
    #[error("TCP congestion control {name:?} needs CAP_NET_ADMIN (allowed without it: {allowed})")]
    NotAllowed { name: String, allowed: String },
    #[error("setting TCP congestion control {name:?}: {source}")]
    Other { name: String, source: Errno },
    #[error("reading a socket's TCP congestion control: {0}")]
    Read(#[from] std::io::Error),
}

/// Makes connections accepted on `listener` use the congestion control `name`.
pub fn set_congestion_control(listener: &impl AsFd, name: &str) -> Result<(), CongestionError> {
    let name_os = OsString::from(name);
    setsockopt(listener, TcpCongestion, &name_os).map_err(|e| match e {
        Errno::ENOENT => CongestionError::Unavailable {
            name: name.to_string(),
            available: read_list(AVAILABLE),
        },
        Errno::EPERM => CongestionError::NotAllowed {
            name: name.to_string(),
            allowed: read_list(ALLOWED),
        },
        source => CongestionError::Other {
            name: name.to_string(),
            source,
        },
    })
}

/// The congestion control a socket uses (a listener: the one its connections will start with).
pub fn congestion_control(socket: &impl AsFd) -> std::io::Result<String> {
    let name = getsockopt(socket, TcpCongestion)?;
    Ok(name.to_string_lossy().trim_end_matches('\0').to_string())
}

/// `--local-tcp-congestion`'s value: the algorithm for connections from this node, or none of
/// its own for `same` (they get what other connections get).
pub fn local_algorithm(setting: &str) -> Option<&str> {
    Some(setting).filter(|name| *name != "same")
}

/// The congestion controls of one listener's connections.
#[derive(Debug, Clone)]
pub struct CongestionPolicy {
    /// What connections from this node use; every connection starts with it.
    pub local: String,
    /// What connections from other hosts are switched to after accept.
    pub remote: String,
    /// Tells the two apart.
    pub locator: Arc<PeerLocator>,
}

impl CongestionPolicy {
    /// Sets `listener` up: connections from other hosts get `remote` (unset: the node's
    /// default), connections from this node get `local` (unset: the same as the others). Both
    /// names are checked here, so a typo fails at start, not per connection.
    pub fn configure(
        listener: &impl AsFd,
        remote: Option<&str>,
        local: Option<&str>,
        locator: Arc<PeerLocator>,
    ) -> Result<Self, CongestionError> {
        if let Some(name) = remote {
            set_congestion_control(listener, name)?;
        }
        let remote = congestion_control(listener)?;
        let local = match local {
            Some(name) if name != remote => {
                set_congestion_control(listener, name)?;
                name.to_string()
            }
            _ => remote.clone(),
        };
        Ok(Self {
            local,
            remote,
            locator,
        })
    }

    /// Gives an accepted connection its algorithm and says where its peer runs and why. A
    /// connection that cannot be switched keeps the local algorithm and still works.
    pub fn on_accept(&self, socket: &impl AsFd, peer: SocketAddr, local: SocketAddr) -> Reason {
        let reason = self.locator.locate(peer, local);
        if reason.peers() == Peers::Remote && self.remote != self.local {
            if let Err(e) = set_congestion_control(socket, &self.remote) {
                tracing::warn!(%peer, error = %e, "could not switch the connection's congestion control");
            }
        }
        tracing::debug!(%peer, peers = reason.peers().label(), via = reason.label(), "connection accepted");
        reason
    }
}

fn read_list(path: &str) -> String {
    std::fs::read_to_string(path).map_or_else(|e| format!("unknown: {e}"), |s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn accepted_connections_start_with_the_listeners_congestion_control() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        // reno is built into every Linux kernel and allowed without privileges.
        set_congestion_control(&listener, "reno").unwrap();
        assert_eq!(congestion_control(&listener).unwrap(), "reno");
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert_eq!(congestion_control(&accepted).unwrap(), "reno");
    }

    #[test]
    fn an_unknown_congestion_control_is_a_clear_error_naming_it() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let before = congestion_control(&listener).unwrap();
        let err = set_congestion_control(&listener, "no-such-cc").unwrap_err();
        assert!(
            matches!(err, CongestionError::Unavailable { .. }),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("\"no-such-cc\""), "{message}");
        assert!(
            message.contains("reno"),
            "lists what is available: {message}"
        );
        assert_eq!(congestion_control(&listener).unwrap(), before);
    }

    fn host_only() -> Arc<PeerLocator> {
        Arc::new(PeerLocator::new(LocalPeers::Host))
    }

    /// An algorithm other than reno that this kernel has, to tell the two policies apart.
    fn another_algorithm() -> Option<String> {
        std::fs::read_to_string(AVAILABLE)
            .ok()?
            .split_whitespace()
            .find(|name| *name != "reno")
            .map(str::to_string)
    }

    #[test]
    fn local_connections_keep_the_listeners_algorithm_and_remote_ones_are_switched() {
        let Some(remote) = another_algorithm() else {
            eprintln!("only reno on this kernel; nothing to tell apart");
            return;
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let policy =
            CongestionPolicy::configure(&listener, Some(&remote), Some("reno"), host_only())
                .unwrap();
        assert_eq!((policy.local.as_str(), &policy.remote), ("reno", &remote));
        assert_eq!(congestion_control(&listener).unwrap(), "reno");

        let addr = listener.local_addr().unwrap();
        let _a = TcpStream::connect(addr).unwrap();
        let (local_conn, peer) = listener.accept().unwrap();
        assert_eq!(policy.on_accept(&local_conn, peer, addr), Reason::Loopback);
        assert_eq!(congestion_control(&local_conn).unwrap(), "reno");

        // The same kind of socket, seen as if its peer were another host.
        let _b = TcpStream::connect(addr).unwrap();
        let (remote_conn, _) = listener.accept().unwrap();
        let elsewhere = "10.1.2.3:40000".parse().unwrap();
        assert_eq!(
            policy.on_accept(&remote_conn, elsewhere, addr).peers(),
            Peers::Remote
        );
        assert_eq!(congestion_control(&remote_conn).unwrap(), remote);
    }

    #[test]
    fn without_a_local_choice_every_connection_gets_the_same_algorithm() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let node_default = congestion_control(&listener).unwrap();
        let policy = CongestionPolicy::configure(&listener, None, None, host_only()).unwrap();
        assert_eq!(policy.local, node_default);
        assert_eq!(policy.remote, node_default);
        // Asking for the remote one as the local one changes nothing either.
        let policy =
            CongestionPolicy::configure(&listener, None, Some(node_default.as_str()), host_only())
                .unwrap();
        assert_eq!(policy.local, policy.remote);
    }

    #[test]
    fn a_bad_local_algorithm_fails_at_start_naming_it() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let err = CongestionPolicy::configure(&listener, None, Some("no-such-cc"), host_only())
            .unwrap_err();
        assert!(err.to_string().contains("\"no-such-cc\""), "{err}");
    }
}
