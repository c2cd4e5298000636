//! Per-core serving keeps each connection on the thread that accepted it, and the kernel
//! picks that thread by a hash of the connection's addresses (`SO_REUSEPORT`). With a
//! few long-lived connections — a handful of gRPC channels — the hash can leave one core
//! with most of them and the other idle. So a thread that accepts a connection while it
//! serves more than another hands it to the least loaded one: once per connection, never
//! per request.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::{
    net::TcpStream,
    sync::{OwnedSemaphorePermit, mpsc},
};

/// The count of a thread that takes no more connections.
const RETIRED: usize = usize::MAX / 2;

/// A connection accepted by one thread for another to serve, with its place under the
/// connection limit (so the inboxes hold no more than the limit allows).
pub(super) struct Handoff {
    pub(super) stream: std::net::TcpStream,
    pub(super) peer: SocketAddr,
    pub(super) slot: OwnedSemaphorePermit,
    pub(super) load: Load,
}

/// One open connection, counted against the thread serving it for as long as it lives.
pub(super) struct Load(Arc<AtomicUsize>);

impl Load {
    fn on(open: &Arc<AtomicUsize>) -> Load {
        open.fetch_add(1, Ordering::Relaxed);
        Load(open.clone())
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every serving thread's open connections and inbox.
pub(super) struct Workers {
    links: Vec<Link>,
}

struct Link {
    open: Arc<AtomicUsize>,
    inbox: mpsc::UnboundedSender<Handoff>,
}

/// Where a connection is served.
pub(super) enum Placed {
    Here(TcpStream, OwnedSemaphorePermit, Load),
    Away,
}

impl Workers {
    /// The links of `count` threads, and each thread's inbox.
    pub(super) fn new(count: usize) -> (Arc<Workers>, Vec<mpsc::UnboundedReceiver<Handoff>>) {
        let (links, inboxes) = (0..count)
            .map(|_| {
                let (inbox, received) = mpsc::unbounded_channel();
                let open = Arc::new(AtomicUsize::new(0));
                (Link { open, inbox }, received)
            })
            .unzip();
        (Arc::new(Workers { links }), inboxes)
    }

    /// Places a connection thread `me` accepted: here, or handed to a thread that
    /// serves fewer connections (counted against it at once, so a burst is spread).
    pub(super) fn place(
        &self,
        me: usize,
        stream: TcpStream,
        peer: SocketAddr,
        slot: OwnedSemaphorePermit,
    ) -> Placed {
        let open: smallvec::SmallVec<[usize; 16]> = self
            .links
            .iter()
            .map(|link| link.open.load(Ordering::Relaxed))
            .collect();
        let (Some(target), Some(mine)) = (less_loaded(&open, me), self.links.get(me)) else {
            return self.here(me, stream, slot);
        };
        let link = &self.links[target];
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "a connection could not be handed over");
                return Placed::Away;
            }
        };
        let load = Load::on(&link.open);
        match link.inbox.send(Handoff {
            stream,
            peer,
            slot,
            load,
        }) {
            Ok(()) => Placed::Away,
            // That thread serves no more (draining, or it never started): serve it here
            // after all, and hand that one nothing again.
            Err(mpsc::error::SendError(handoff)) => {
                let Handoff {
                    stream, slot, load, ..
                } = handoff;
                drop(load);
                self.retire(target);
                match TcpStream::from_std(stream) {
                    Ok(stream) => Placed::Here(stream, slot, Load::on(&mine.open)),
                    Err(e) => {
                        tracing::debug!(error = %e, "a connection could not be taken back");
                        Placed::Away
                    }
                }
            }
        }
    }

    /// Takes thread `index` out of the choice: it accepts and takes over no more.
    pub(super) fn retire(&self, index: usize) {
        if let Some(link) = self.links.get(index) {
            // Far above any count, and far below overflow as its connections end.
            link.open.store(RETIRED, Ordering::Relaxed);
        }
    }

    fn here(&self, me: usize, stream: TcpStream, slot: OwnedSemaphorePermit) -> Placed {
        match self.links.get(me) {
            Some(mine) => Placed::Here(stream, slot, Load::on(&mine.open)),
            // Not one of the threads: served all the same, uncounted.
            None => Placed::Here(stream, slot, Load(Arc::new(AtomicUsize::new(1)))),
        }
    }

    /// Counts a connection handed to `me` no further (the sender counted it already).
    pub(super) fn received(
        handoff: Handoff,
    ) -> std::io::Result<(TcpStream, SocketAddr, OwnedSemaphorePermit, Load)> {
        let stream = TcpStream::from_std(handoff.stream)?;
        Ok((stream, handoff.peer, handoff.slot, handoff.load))
    }
}

/// The thread to hand a new connection to: the least loaded, if it serves fewer than
/// `me` does.
fn less_loaded(open: &[usize], me: usize) -> Option<usize> {
    let mine = *open.get(me)?;
    let (target, fewest) = open
        .iter()
        .enumerate()
        .min_by_key(|(index, open)| (**open, *index != me))?;
    (*fewest < mine).then_some(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback port with eight connection slots; its clients stay open with it.
    struct Port {
        listener: tokio::net::TcpListener,
        slots: Arc<tokio::sync::Semaphore>,
        clients: tokio::sync::Mutex<Vec<TcpStream>>,
    }

    impl Port {
        async fn open() -> Port {
            Port {
                listener: tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind"),
                slots: Arc::new(tokio::sync::Semaphore::new(8)),
                clients: Default::default(),
            }
        }

        /// A new connection, accepted, with its slot.
        async fn accept(&self) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
            let addr = self.listener.local_addr().expect("addr");
            let client = TcpStream::connect(addr).await.expect("connect");
            self.clients.lock().await.push(client);
            let (stream, peer) = self.listener.accept().await.expect("accept");
            let slot = self.slots.clone().try_acquire_owned().expect("slot");
            (stream, peer, slot)
        }
    }

    #[test]
    fn a_connection_goes_to_a_thread_with_fewer() {
        assert_eq!(less_loaded(&[0, 0], 0), None, "even: stay");
        assert_eq!(less_loaded(&[1, 0], 0), Some(1));
        assert_eq!(less_loaded(&[1, 1], 1), None);
        assert_eq!(less_loaded(&[3, 1, 2], 0), Some(1), "the least loaded");
        assert_eq!(
            less_loaded(&[2, 1, 1], 0),
            Some(1),
            "the first of the least"
        );
        assert_eq!(less_loaded(&[1, 1, 0], 2), None, "already the least");
        assert_eq!(less_loaded(&[1], 3), None, "no such thread");
    }

    #[tokio::test]
    async fn four_connections_accepted_by_one_thread_end_up_two_and_two() {
        let port = Port::open().await;
        let (workers, mut inboxes) = Workers::new(2);
        let (mut here, mut away) = (Vec::new(), Vec::new());
        for _ in 0..4 {
            let (stream, peer, slot) = port.accept().await;
            if let Placed::Here(stream, slot, load) = workers.place(0, stream, peer, slot) {
                here.push((stream, slot, load));
            }
        }
        let slots = &port.slots;
        while let Ok(handoff) = inboxes[1].try_recv() {
            away.push(Workers::received(handoff).expect("taken over"));
        }
        assert_eq!((here.len(), away.len()), (2, 2));
        assert_eq!(
            slots.available_permits(),
            4,
            "each connection keeps its place"
        );
        drop(away);
        let open = |i: usize| workers.links[i].open.load(Ordering::Relaxed);
        assert_eq!(
            (open(0), open(1)),
            (2, 0),
            "a closed connection is no longer counted"
        );
    }

    #[tokio::test]
    async fn a_thread_that_serves_no_more_is_handed_nothing() {
        let port = Port::open().await;
        let (workers, mut inboxes) = Workers::new(2);
        drop(inboxes.pop()); // thread 1 is gone
        let mut here = Vec::new();
        for _ in 0..3 {
            let (stream, peer, slot) = port.accept().await;
            match workers.place(0, stream, peer, slot) {
                Placed::Here(stream, slot, load) => here.push((stream, slot, load)),
                Placed::Away => panic!("handed to a thread that is gone"),
            }
        }
        assert_eq!(here.len(), 3, "all served by the thread that accepted them");
        assert_eq!(workers.links[0].open.load(Ordering::Relaxed), 3);
        assert_eq!(workers.links[1].open.load(Ordering::Relaxed), RETIRED);
        assert_eq!(port.slots.available_permits(), 5);
    }
}
