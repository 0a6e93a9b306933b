//! How the lab's clients (and `imctl chat`) open a WebSocket.
//!
//! tungstenite's default read buffer is 128 KiB, and it zero-fills the
//! free part of it before every read of the socket: a client that reads
//! one small frame at a time pays a 128 KiB `memset` per frame. In the
//! 10,000-member fanout bench that was 71 % of the load client's CPU, taken
//! from the two cores the system under test runs on. A frame larger than
//! the buffer still arrives whole: the buffer grows for it, up to the
//! message size limit.

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client's read and write buffer: a few frames' worth.
pub const CLIENT_BUFFER_BYTES: usize = 8 * 1024;

pub type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// The configuration every lab client connects with.
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(CLIENT_BUFFER_BYTES)
        .write_buffer_size(CLIENT_BUFFER_BYTES)
}

/// Connect to `url` (`ws://` or `wss://`) with [`client_config`], with
/// Nagle's algorithm off: a frame written while the last is not yet
/// acknowledged goes out at once, not after the peer's delayed ACK (up to
/// 40 ms on Linux), as the gateway's own sockets do.
pub async fn connect(url: &str) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let (socket, _) =
        tokio_tungstenite::connect_async_with_config(url, Some(client_config()), true).await?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    /// Small buffers must not cut frames: one far larger than the buffer
    /// and the small ones after it arrive whole and in order.
    #[tokio::test]
    async fn frames_larger_than_the_buffer_arrive_whole() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let large = "x".repeat(20 * CLIENT_BUFFER_BYTES + 17);
        let sent = large.clone();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut socket = tokio_tungstenite::accept_async(tcp).await.unwrap();
            socket.send(Message::text("first")).await.unwrap();
            socket.send(Message::text(sent)).await.unwrap();
            socket.send(Message::text("last")).await.unwrap();
            // Until the client has read them.
            let _ = socket.next().await;
        });
        let mut client = connect(&format!("ws://127.0.0.1:{port}/")).await.unwrap();
        let mut got = Vec::new();
        while got.len() < 3 {
            match client.next().await.unwrap().unwrap() {
                Message::Text(text) => got.push(text.to_string()),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, vec!["first".to_string(), large, "last".to_string()]);
        client.close(None).await.unwrap();
        server.await.unwrap();
    }
}
