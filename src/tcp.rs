//! The TCP congestion control of the listeners that move shuffle bytes.
//!
//! Connections accepted on a listener start with the listener's algorithm, so setting it once
//! per listener covers every connection. Why a shuffle service has a say: BBR, a common node
//! default, paces every connection, and without an `fq` qdisc the kernel paces with a timer per
//! socket. Between pods of one node, where pacing buys nothing, arming that timer was ~40% of
//! the Spark path's CPU on the benchmark VM (README "Performance"); the node's default stays
//! the default, and operators choose per DaemonSet.

use std::ffi::OsString;
use std::os::fd::AsFd;

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
}
