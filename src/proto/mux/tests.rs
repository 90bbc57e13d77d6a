use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::frame::{frame, DATA, OPEN};
use super::{serve, Mux, MuxStream, MAX_DATA, WINDOW};

const DEADLINE: Duration = Duration::from_secs(20);

/// The acceptor end on a task of its own: every stream it accepts goes to `handle`.
fn acceptor<F, Fut>(
    conn: tokio::io::DuplexStream,
    stop: CancellationToken,
    handle: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(MuxStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        serve(conn, &stop, move |stream| {
            tokio::spawn(handle(stream));
        })
        .await;
    })
}

/// Echoes until EOF, then half-closes.
async fn echo(mut stream: MuxStream) {
    let mut buf = vec![0u8; 10_000];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    stream.shutdown().await.ok();
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn many_streams_round_trip_byte_exact_with_half_close() {
    let (laptop, agent) = tokio::io::duplex(64 * 1024);
    let _agent = acceptor(agent, CancellationToken::new(), echo);
    let mux = Mux::start(laptop);
    let mut tasks = Vec::new();
    for seed in 0..16u8 {
        let mut stream = mux.open().unwrap();
        tasks.push(tokio::spawn(async move {
            // More than a window each way, so credit has to come back.
            let sent = pattern(3 * WINDOW as usize + 12_345, seed);
            let (mut rd, mut wr) = tokio::io::split(&mut stream);
            let write = async {
                wr.write_all(&sent).await.unwrap();
                // Half-close: the echo still answers everything, then ends.
                wr.shutdown().await.unwrap();
            };
            let mut got = Vec::new();
            let read = rd.read_to_end(&mut got);
            let ((), read) = tokio::join!(write, read);
            read.unwrap();
            assert!(got == sent, "stream {seed}: {} bytes back", got.len());
        }));
    }
    for task in tasks {
        tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_stalled_stream_does_not_hold_up_the_others() {
    let (laptop, agent) = tokio::io::duplex(64 * 1024);
    // Stream 0's reader never reads; every other stream echoes.
    let (parked_tx, mut parked) = mpsc::unbounded_channel();
    let _agent = acceptor(agent, CancellationToken::new(), move |stream: MuxStream| {
        let parked_tx = parked_tx.clone();
        async move {
            if stream.id == 0 {
                parked_tx.send(stream).ok();
            } else {
                echo(stream).await;
            }
        }
    });
    let mux = Mux::start(laptop);
    let mut stalled = mux.open().unwrap();
    // Fills its window and then some: the writer blocks, alone.
    let blocked = tokio::spawn(async move {
        stalled
            .write_all(&pattern(4 * WINDOW as usize, 1))
            .await
            .ok();
        stalled
    });
    let _parked = tokio::time::timeout(DEADLINE, parked.recv()).await.unwrap();
    let mut other = mux.open().unwrap();
    for round in 0..100u32 {
        let msg = round.to_be_bytes();
        other.write_all(&msg).await.unwrap();
        let mut back = [0u8; 4];
        tokio::time::timeout(DEADLINE, other.read_exact(&mut back))
            .await
            .expect("another stream answers while one is stalled")
            .unwrap();
        assert_eq!(back, msg);
    }
    assert!(
        !blocked.is_finished(),
        "the stalled stream's writer waits for credit"
    );
}

#[tokio::test]
async fn dropping_a_stream_resets_the_far_end() {
    let (laptop, agent) = tokio::io::duplex(64 * 1024);
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let _agent = acceptor(
        agent,
        CancellationToken::new(),
        move |mut stream: MuxStream| {
            let seen_tx = seen_tx.clone();
            async move {
                let mut buf = [0u8; 16];
                let read = stream.read(&mut buf).await;
                // After a reset, writes fail too.
                let write = stream.write_all(b"late").await;
                seen_tx
                    .send((read.map_err(|e| e.kind()), write.is_err()))
                    .ok();
            }
        },
    );
    let mux = Mux::start(laptop);
    let stream = mux.open().unwrap();
    drop(stream);
    let (read, write_failed) = tokio::time::timeout(DEADLINE, seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read, Err(io::ErrorKind::ConnectionReset));
    assert!(write_failed);
}

#[tokio::test]
async fn the_end_of_the_connection_resets_every_stream_and_refuses_new_ones() {
    let (laptop, agent) = tokio::io::duplex(64 * 1024);
    let (held_tx, mut held) = mpsc::unbounded_channel();
    let agent_task = acceptor(agent, CancellationToken::new(), move |stream: MuxStream| {
        held_tx.send(stream).ok();
        async {}
    });
    let mux = Mux::start(laptop);
    let mut a = mux.open().unwrap();
    let mut b = mux.open().unwrap();
    let first = tokio::time::timeout(DEADLINE, held.recv()).await.unwrap();
    let second = tokio::time::timeout(DEADLINE, held.recv()).await.unwrap();
    // The agent's end goes away (the process died, the SSH channel closed).
    agent_task.abort();
    drop((first, second));
    let _ = agent_task.await;
    let mut buf = [0u8; 4];
    for stream in [&mut a, &mut b] {
        let read = tokio::time::timeout(DEADLINE, stream.read(&mut buf))
            .await
            .unwrap();
        assert!(
            matches!(&read, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
            "{read:?}"
        );
    }
    assert!(mux.is_ended());
    assert!(mux.open().is_err());
}

#[tokio::test]
async fn when_the_laptop_lets_go_the_agent_end_returns() {
    let (laptop, agent) = tokio::io::duplex(64 * 1024);
    let agent_task = acceptor(agent, CancellationToken::new(), echo);
    let mux = Mux::start(laptop);
    let mut stream = mux.open().unwrap();
    stream.write_all(b"hi").await.unwrap();
    let mut back = [0u8; 2];
    stream.read_exact(&mut back).await.unwrap();
    drop(stream);
    drop(mux);
    tokio::time::timeout(DEADLINE, agent_task)
        .await
        .expect("the agent's end of the connection returns")
        .unwrap();
}

#[tokio::test]
async fn stopping_waits_for_open_streams_and_refuses_new_ones() {
    let (laptop, agent) = tokio::io::duplex(64 * 1024);
    let stop = CancellationToken::new();
    let agent_task = acceptor(agent, stop.clone(), echo);
    let mux = Mux::start(laptop);
    let mut open = mux.open().unwrap();
    open.write_all(b"a").await.unwrap();
    let mut one = [0u8; 1];
    open.read_exact(&mut one).await.unwrap();
    stop.cancel();
    // Opened after the stop: reset at once.
    let mut late = mux.open().unwrap();
    let read = tokio::time::timeout(DEADLINE, late.read(&mut one))
        .await
        .unwrap();
    assert!(read.is_err(), "{read:?}");
    // The stream opened before still works, and the agent's end waits for it.
    open.write_all(b"b").await.unwrap();
    open.read_exact(&mut one).await.unwrap();
    assert_eq!(&one, b"b");
    assert!(!agent_task.is_finished());
    open.shutdown().await.unwrap();
    let mut rest = Vec::new();
    open.read_to_end(&mut rest).await.unwrap();
    drop(open);
    tokio::time::timeout(DEADLINE, agent_task)
        .await
        .expect("the agent's end returns once no stream is left")
        .unwrap();
}

#[tokio::test]
async fn a_broken_frame_ends_the_connection() {
    for bytes in [
        // An unknown kind.
        vec![9u8, 0, 0, 0, 1, 0, 0, 0, 0],
        // DATA longer than allowed.
        [
            vec![DATA, 0, 0, 0, 1],
            (MAX_DATA as u32 + 1).to_be_bytes().to_vec(),
        ]
        .concat(),
        // The same stream opened twice.
        [frame(OPEN, 7, &[]), frame(OPEN, 7, &[])].concat(),
    ] {
        let (mut laptop, agent) = tokio::io::duplex(64 * 1024);
        // Streams are held open, as a connection to a pod would be.
        let agent_task = acceptor(agent, CancellationToken::new(), |stream| async move {
            std::future::pending::<()>().await;
            drop(stream);
        });
        laptop.write_all(&bytes).await.unwrap();
        tokio::time::timeout(DEADLINE, agent_task)
            .await
            .expect("the agent's end gives up on a broken peer")
            .unwrap();
    }
}

#[tokio::test]
async fn data_beyond_the_window_ends_the_connection() {
    let (mut laptop, agent) = tokio::io::duplex(64 * 1024);
    let (held_tx, mut held) = mpsc::unbounded_channel();
    let agent_task = acceptor(agent, CancellationToken::new(), move |stream: MuxStream| {
        held_tx.send(stream).ok();
        async {}
    });
    laptop.write_all(&frame(OPEN, 1, &[])).await.unwrap();
    let _held = tokio::time::timeout(DEADLINE, held.recv()).await.unwrap();
    let chunk = vec![0u8; MAX_DATA];
    let frames = WINDOW as usize / MAX_DATA + 1;
    let writer = tokio::spawn(async move {
        for _ in 0..frames {
            if laptop.write_all(&frame(DATA, 1, &chunk)).await.is_err() {
                break;
            }
        }
        laptop
    });
    tokio::time::timeout(DEADLINE, agent_task)
        .await
        .expect("a peer that ignores the window is cut off")
        .unwrap();
    drop(writer);
}
