//! A small SMTP server on 127.0.0.1 for tests: it speaks enough of RFC 5321 (EHLO, AUTH
//! PLAIN, MAIL, RCPT, DATA, RSET, QUIT) for a real client, records every message it
//! accepts, and can be told to answer `MAIL FROM` with a transient (451) or a permanent
//! (550) error for the next N messages.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One accepted message.
#[derive(Debug, Clone, Default)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
    /// The decoded `AUTH PLAIN` credentials (`\0user\0password`), when the client sent them.
    pub auth: Option<String>,
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    /// Replies for the next `MAIL FROM`s, used up in order.
    mail_replies: Vec<String>,
    sessions: usize,
}

#[derive(Clone)]
pub struct SmtpSink {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let s = state.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = session(sock, s).await;
                });
            }
        });
        SmtpSink { port, state }
    }

    /// The next `MAIL FROM`s get these replies (e.g. `451 4.3.0 try later`).
    pub fn fail_next(&self, replies: &[&str]) {
        let mut st = self.state.lock().unwrap();
        st.mail_replies = replies.iter().map(|r| r.to_string()).collect();
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    pub fn sessions(&self) -> usize {
        self.state.lock().unwrap().sessions
    }
}

fn decode_b64(s: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.trim().bytes().filter(|c| *c != b'=') {
        let Some(v) = A.iter().position(|a| *a == c) else {
            continue;
        };
        bits = (bits << 6) | v as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn session(sock: tokio::net::TcpStream, state: Arc<Mutex<State>>) -> std::io::Result<()> {
    state.lock().unwrap().sessions += 1;
    let (r, mut w) = sock.into_split();
    let mut lines = BufReader::new(r).lines();
    w.write_all(b"220 sink.test ESMTP ready\r\n").await?;
    let mut cur = Received::default();
    let mut auth = None;
    while let Some(line) = lines.next_line().await? {
        let upper = line.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            "250-sink.test\r\n250-AUTH PLAIN\r\n250 8BITMIME".into()
        } else if upper.starts_with("AUTH PLAIN") {
            auth = Some(decode_b64(line.get(11..).unwrap_or("")));
            "235 2.7.0 accepted".into()
        } else if upper.starts_with("MAIL FROM:") {
            let canned = {
                let mut st = state.lock().unwrap();
                (!st.mail_replies.is_empty()).then(|| st.mail_replies.remove(0))
            };
            match canned {
                Some(r) => r,
                None => {
                    cur = Received {
                        from: line[10..].trim().to_string(),
                        auth: auth.clone(),
                        ..Default::default()
                    };
                    "250 2.1.0 ok".into()
                }
            }
        } else if upper.starts_with("RCPT TO:") {
            cur.to.push(line[8..].trim().to_string());
            "250 2.1.5 ok".into()
        } else if upper == "DATA" {
            w.write_all(b"354 go ahead\r\n").await?;
            let mut data = String::new();
            while let Some(l) = lines.next_line().await? {
                if l == "." {
                    break;
                }
                data.push_str(&l);
                data.push('\n');
            }
            cur.data = data;
            state
                .lock()
                .unwrap()
                .received
                .push(std::mem::take(&mut cur));
            "250 2.0.0 queued".into()
        } else if upper == "RSET" || upper == "NOOP" {
            "250 2.0.0 ok".into()
        } else if upper == "QUIT" {
            w.write_all(b"221 2.0.0 bye\r\n").await?;
            return Ok(());
        } else {
            "502 5.5.2 not implemented".into()
        };
        w.write_all(format!("{reply}\r\n").as_bytes()).await?;
    }
    Ok(())
}
