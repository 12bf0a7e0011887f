//! A TCP proxy in front of a shared server (Redis, PostgreSQL), so a test can take that server
//! away from one node without stopping it for the other tests: connections and listening port
//! both ([`Proxy::stop`]), or only the traffic of the connections already open, which stay open
//! ([`Proxy::silence`], a half-open connection as a dropped NAT or firewall entry leaves).

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

pub struct Proxy {
    pub addr: SocketAddr,
    /// How many times [`Proxy::silence`] was called: a connection opened before the latest call
    /// forwards nothing more.
    silenced: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Forwards every connection to `target` until [`Proxy::stop`].
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (silenced, silences) = watch::channel(0);
        let task = tokio::spawn(async move {
            // Held here, so aborting this task closes every forwarded connection too.
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut silences = silences.clone();
                let opened = *silences.borrow_and_update();
                connections.spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let silenced = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => false,
                        _ = silences.wait_for(|n| *n > opened) => true,
                    };
                    if silenced {
                        // Both sockets stay open, and nothing more crosses.
                        std::future::pending::<()>().await;
                    }
                });
            }
        });
        Self {
            addr,
            silenced,
            task,
        }
    }

    /// Stops forwarding on every connection open now, leaving them open; new connections are
    /// forwarded as before.
    pub fn silence(&self) {
        self.silenced.send_modify(|n| *n += 1);
    }

    /// Closes the listening port and every connection: the server is gone for its clients.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
