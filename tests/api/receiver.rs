//! A webhook receiver for the tests: an HTTP endpoint on loopback that
//! records every POST (its `webhook-id`, timestamp, signature and body) and
//! answers as told (fail the first N, or hold every POST until released).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{extract::State, http::HeaderMap, http::StatusCode, routing::post};
use mentorship::app::{Rules, targets::Targets};

/// `rules` with webhooks allowed to reach the tests' receivers on loopback.
pub fn allowing_loopback(rules: Rules) -> Rules {
    Rules {
        webhooks: mentorship::app::WebhookRules {
            targets: Targets::Any,
            ..rules.webhooks
        },
        ..rules
    }
}

/// One POST the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: serde_json::Value,
    /// The body's bytes as received (signatures cover these).
    pub raw: Vec<u8>,
    /// What the receiver answered.
    pub status: u16,
}

/// How the receiver answers.
#[derive(Default)]
struct Behaviour {
    /// Answer 500 to this many POSTs first.
    fail_first: usize,
    /// Hold every POST until released.
    hold: Option<Arc<tokio::sync::Notify>>,
}

/// An HTTP endpoint that records every POST.
pub struct Receiver {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    behaviour: Arc<Mutex<Behaviour>>,
}

type Shared = (Arc<Mutex<Vec<Received>>>, Arc<Mutex<Behaviour>>);

async fn receive(
    State((received, behaviour)): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (status, hold) = {
        let mut b = behaviour.lock().expect("behaviour");
        let status = if b.fail_first > 0 {
            b.fail_first -= 1;
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        };
        (status, b.hold.clone())
    };
    let record = Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        raw: body.to_vec(),
        status: status.as_u16(),
    };
    received.lock().expect("received").push(record);
    if let Some(hold) = hold {
        hold.notified().await;
    }
    status
}

impl Receiver {
    pub async fn start() -> Receiver {
        let received = Arc::new(Mutex::new(Vec::new()));
        let behaviour = Arc::new(Mutex::new(Behaviour::default()));
        let router = axum::Router::new()
            .route("/hook", post(receive))
            .with_state((received.clone(), behaviour.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, router).await });
        Receiver {
            addr,
            received,
            behaviour,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("received").clone()
    }

    pub fn fail_first(&self, n: usize) {
        self.behaviour.lock().expect("behaviour").fail_first = n;
    }

    pub fn hold(&self) -> Arc<tokio::sync::Notify> {
        let hold = Arc::new(tokio::sync::Notify::new());
        self.behaviour.lock().expect("behaviour").hold = Some(hold.clone());
        hold
    }

    pub fn release(&self) {
        if let Some(hold) = self.behaviour.lock().expect("behaviour").hold.take() {
            hold.notify_waiters();
        }
    }

    /// Polls (bounded) until `done` holds for what was received.
    pub async fn wait_for(&self, within: Duration, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let got = self.received();
            if done(&got) || tokio::time::Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
