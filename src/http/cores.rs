//! Serving on one single-threaded runtime per core: one acceptor hands each accepted
//! connection to the serving threads in turn, and a connection's requests, with their
//! upstream exchanges, then run on that thread alone.
//!
//! On a work-stealing runtime a request's wake-ups (its client's socket, its upstream's)
//! often land on the other thread, and moving the task costs more than the request's own
//! work. One runtime per core keeps each connection where it started: +11 % throughput
//! through llmhub (bench/README.md, "Against nginx"). Background work (reloads,
//! the ledger writer, MCP backends) stays on the main runtime.

use std::io;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

static HOUSEKEEPING: OnceLock<fn()> = OnceLock::new();

/// Work each serving thread does once a second for itself; the binary sets it (its
/// allocator returns the memory the thread freed, which only that thread can do).
pub fn set_housekeeping(work: fn()) {
    let _ = HOUSEKEEPING.set(work);
}

/// Serves `router` on one thread per available core until `cancel` fires, then lets each
/// thread finish its connections gracefully; returns when every thread has.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    cancel: CancellationToken,
) -> io::Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let mut inboxes = Vec::with_capacity(threads);
    let mut finished = Vec::with_capacity(threads);
    for n in 0..threads {
        let (inbox, connections) = mpsc::unbounded_channel();
        let (done, finished_rx) = oneshot::channel::<io::Result<()>>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let router = router.clone();
        let cancel = cancel.clone();
        std::thread::Builder::new()
            .name(format!("llmhub-http-{n}"))
            .spawn(move || {
                let served = runtime.block_on(async move {
                    if let Some(work) = HOUSEKEEPING.get() {
                        tokio::spawn(async move {
                            let mut every = tokio::time::interval(Duration::from_secs(1));
                            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                            loop {
                                every.tick().await;
                                work();
                            }
                        });
                    }
                    axum::serve(Handed { connections }, router)
                        .with_graceful_shutdown(cancel.cancelled_owned())
                        .await
                });
                let _ = done.send(served);
            })?;
        inboxes.push(inbox);
        finished.push(finished_rx);
    }
    let mut next = 0;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = cancel.cancelled() => break,
        };
        match accepted {
            Ok((tcp, peer)) => {
                // Replies are written whole; Nagle's delay would only add latency to small ones.
                let _ = tcp.set_nodelay(true);
                match tcp.into_std() {
                    Ok(tcp) => {
                        let _ = inboxes[next].send((tcp, peer));
                        next = (next + 1) % threads;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot hand over a connection"),
                }
            }
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::error!(error = %e, "accepting connections failed; retrying in 1 s");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = cancel.cancelled() => break,
                }
            }
        }
    }
    drop(inboxes);
    let mut result = Ok(());
    for finished in finished {
        if let Ok(Err(e)) = finished.await {
            result = Err(e);
        }
    }
    result
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The connections the acceptor handed to one serving thread.
struct Handed {
    connections: mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>,
}

impl axum::serve::Listener for Handed {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let Some((tcp, peer)) = self.connections.recv().await else {
                // The acceptor has stopped; the graceful shutdown ends this server.
                return std::future::pending().await;
            };
            // Registered with this thread's runtime, so its readiness wakes this thread.
            match TcpStream::from_std(tcp) {
                Ok(tcp) => return (tcp, peer),
                Err(e) => tracing::warn!(error = %e, "cannot take over a connection"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Err(io::Error::other(
            "connections are handed over by the acceptor",
        ))
    }
}
