//! A minimal RESP client: enough to prove bytes cross the forward intact.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One redis connection.
pub struct Redis {
    conn: BufReader<TcpStream>,
}

impl Redis {
    /// Connects to `addr` (`127.0.0.1:PORT`).
    pub async fn connect(addr: &str) -> std::io::Result<Redis> {
        let conn = TcpStream::connect(addr).await?;
        conn.set_nodelay(true)?;
        Ok(Redis {
            conn: BufReader::new(conn),
        })
    }

    /// Sends one command.
    pub async fn send(&mut self, args: &[&[u8]]) -> std::io::Result<()> {
        let mut buf = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            buf.extend_from_slice(a);
            buf.extend_from_slice(b"\r\n");
        }
        self.conn.get_mut().write_all(&buf).await
    }

    /// Reads a simple/error/integer reply line, or a bulk string (`None` for nil).
    pub async fn reply(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut line = String::new();
        if self.conn.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end();
        match line.as_bytes().first() {
            Some(b'$') => {
                let len: i64 = line[1..]
                    .parse()
                    .map_err(|_| std::io::Error::other("bad bulk length"))?;
                if len < 0 {
                    return Ok(None);
                }
                let mut data = vec![0u8; len as usize + 2];
                self.conn.read_exact(&mut data).await?;
                data.truncate(len as usize);
                Ok(Some(data))
            }
            _ => Ok(Some(line.as_bytes().to_vec())),
        }
    }

    /// `CMD args…` and its reply.
    pub async fn call(&mut self, args: &[&[u8]]) -> std::io::Result<Option<Vec<u8>>> {
        self.send(args).await?;
        self.reply().await
    }
}

/// SET then GET of a value of its own on `n` connections at once; how many got their value.
pub async fn concurrent_set_get(addr: &str, n: usize) -> usize {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let addr = addr.to_string();
            tokio::spawn(async move {
                let mut r = Redis::connect(&addr).await?;
                let key = format!("conn-{i}");
                let val = format!("value-{i}-").repeat(50);
                r.call(&[b"SET", key.as_bytes(), val.as_bytes()]).await?;
                let got = r.call(&[b"GET", key.as_bytes()]).await?;
                Ok::<_, std::io::Error>(got == Some(val.into_bytes()))
            })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        match tokio::time::timeout(std::time::Duration::from_secs(90), task).await {
            Ok(Ok(Ok(true))) => ok += 1,
            other => eprintln!("a concurrent client failed: {other:?}"),
        }
    }
    ok
}
