//! One conformance suite for every `Transport`: the TCP transport and the
//! in-process network must behave the same to the node above them, which
//! only ever sees `dyn Transport` and an `Inbox`.

use std::sync::Arc;
use std::time::Duration;

use ringkv::{
    ClusterSecret, Envelope, Error, Inbox, MemoryNetConfig, MemoryNetwork, Message, NodeId,
    TcpConfig, TcpTransport, Transport,
};
use tokio::time::timeout;

type Endpoint = (Arc<dyn Transport>, Inbox);

const WAIT: Duration = Duration::from_secs(30);

fn ping(from: u64, to: u64, seq: u64) -> Envelope {
    Envelope::new(
        NodeId(from),
        NodeId(to),
        Message::Ping {
            seq,
            payload: vec![seq as u8; (seq % 300) as usize],
        },
    )
}

async fn recv(inbox: &mut Inbox) -> Envelope {
    timeout(WAIT, inbox.recv())
        .await
        .expect("an envelope within the wait")
        .expect("the inbox is open")
}

async fn send_retrying(t: &dyn Transport, env: Envelope) {
    loop {
        match t.send(env.clone()) {
            Ok(()) => return,
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(1)).await,
            Err(e) => panic!("send failed: {e}"),
        }
    }
}

/// The suite: two endpoints, node 1 and node 2, that can reach each other.
async fn conformance(a: Endpoint, b: Endpoint) {
    let (a, mut a_in) = a;
    let (b, mut b_in) = b;
    assert_eq!(a.local_id(), NodeId(1));
    assert_eq!(b.local_id(), NodeId(2));

    // Order per link, both directions, envelopes unchanged.
    for seq in 0..1_000 {
        send_retrying(a.as_ref(), ping(1, 2, seq)).await;
        send_retrying(b.as_ref(), ping(2, 1, seq)).await;
    }
    for seq in 0..1_000 {
        assert_eq!(recv(&mut b_in).await, ping(1, 2, seq));
        assert_eq!(recv(&mut a_in).await, ping(2, 1, seq));
    }
    let (sa, sb) = (a.stats(), b.stats());
    assert!(sa.frames_sent >= 1_000 && sb.frames_received >= 1_000);
    assert!(sa.bytes_sent > 0 && sb.bytes_received > 0);

    // A reply travels back on the same path.
    a.send(ping(1, 2, 5_000)).unwrap();
    let got = recv(&mut b_in).await;
    let Message::Ping { seq, payload } = got.msg else {
        panic!("expected a ping")
    };
    b.send(Envelope::new(
        NodeId(2),
        got.from,
        Message::Pong { seq, payload },
    ))
    .unwrap();
    assert!(matches!(
        recv(&mut a_in).await.msg,
        Message::Pong { seq: 5_000, .. }
    ));

    // Errors are the documented ones.
    assert!(matches!(
        a.send(ping(1, 77, 0)),
        Err(Error::UnknownPeer(NodeId(77)))
    ));
    let huge = Envelope::new(
        NodeId(1),
        NodeId(2),
        Message::Ping {
            seq: 0,
            payload: vec![0; 17 * 1024 * 1024],
        },
    );
    assert!(matches!(a.send(huge), Err(Error::FrameTooLarge { .. })));

    timeout(WAIT, a.shutdown()).await.expect("shutdown ends");
    assert!(matches!(a.send(ping(1, 2, 0)), Err(Error::Shutdown)));
    timeout(WAIT, b.shutdown()).await.expect("shutdown ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_transport_conforms() {
    let secret = ClusterSecret::new(b"conformance suite secret".to_vec()).unwrap();
    let ca = ringkv::ClusterCa::generate("conformance").unwrap();
    let (a, a_in) = TcpTransport::bind(TcpConfig::new(
        NodeId(1),
        "conformance",
        secret.clone(),
        ca.security_for(NodeId(1)).unwrap(),
        "127.0.0.1:0",
    ))
    .await
    .unwrap();
    let (b, b_in) = TcpTransport::bind(TcpConfig::new(
        NodeId(2),
        "conformance",
        secret,
        ca.security_for(NodeId(2)).unwrap(),
        "127.0.0.1:0",
    ))
    .await
    .unwrap();
    a.learn_peer(NodeId(2), &b.local_addr().to_string())
        .unwrap();
    b.learn_peer(NodeId(1), &a.local_addr().to_string())
        .unwrap();
    conformance((Arc::new(a), a_in), (Arc::new(b), b_in)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_network_conforms() {
    let net = MemoryNetwork::new(MemoryNetConfig::default()).unwrap();
    let (a, a_in) = net.endpoint(NodeId(1)).unwrap();
    let (b, b_in) = net.endpoint(NodeId(2)).unwrap();
    // Addresses mean nothing here, and are accepted.
    a.learn_peer(NodeId(2), "anywhere:1").unwrap();
    conformance((Arc::new(a), a_in), (Arc::new(b), b_in)).await;
}
