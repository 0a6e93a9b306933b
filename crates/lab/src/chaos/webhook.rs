//! The push provider of the chaos run: a local webhook receiver that
//! records every notification the offline function sends, for the verifier.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;

use super::verify::Notice;

#[derive(Clone, Default)]
pub struct Received {
    pub notices: Arc<Mutex<Vec<Notice>>>,
    /// Bodies that were not a notification (a violation if any).
    pub unreadable: Arc<Mutex<Vec<String>>>,
}

impl Received {
    pub fn notices(&self) -> Vec<Notice> {
        self.notices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

async fn receive(State(received): State<Received>, body: Bytes) -> StatusCode {
    match serde_json::from_slice::<Notice>(&body) {
        Ok(notice) => received
            .notices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(notice),
        Err(error) => received
            .unreadable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{error}: {}", String::from_utf8_lossy(&body))),
    }
    StatusCode::OK
}

/// Listen on 127.0.0.1 (a free port); returns the URL to post to.
pub async fn start(received: Received) -> crate::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(received);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(url)
}
