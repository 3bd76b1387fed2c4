//! Load loops: keep-alive clients requesting one URL, each request recorded as a
//! `switchyard_loadcheck::Sample` (start, end, answering version, ok).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use switchyard_loadcheck::{Kind, Sample};
use tokio::task::JoinHandle;

/// Milliseconds since a common origin, as `f64`: one time base for the load and a switch
/// log, so a verdict compares like with like.
#[derive(Clone, Copy, Debug)]
pub struct Clock(Instant);

impl Clock {
    pub fn new() -> Self {
        Self(Instant::now())
    }

    pub fn now_ms(&self) -> f64 {
        self.0.elapsed().as_secs_f64() * 1000.0
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Concurrent keep-alive clients requesting one URL until stopped.
pub struct LoadGen {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Vec<Sample>>>,
}

impl LoadGen {
    /// Starts `clients` tasks, each with its own connection pool, reading
    /// the answering version from `version_header`; each sends its next request as soon as
    /// the last one is answered.
    pub fn start(clients: usize, url: String, version_header: &'static str, clock: Clock) -> Self {
        Self::start_paced(clients, url, version_header, clock, Duration::ZERO)
    }

    /// As [`LoadGen::start`], each client waiting `pause` after every answer.
    pub fn start_paced(
        clients: usize,
        url: String,
        version_header: &'static str,
        clock: Clock,
        pause: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, url) = (Arc::clone(&stop), url.clone());
                tokio::spawn(async move {
                    let client = switchyard_hashi::tls::http_client_builder()
                        .timeout(Duration::from_secs(10))
                        .pool_max_idle_per_host(1)
                        .build()
                        .unwrap();
                    let mut samples = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        samples.push(request(&client, &url, version_header, clock).await);
                        if !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                    }
                    samples
                })
            })
            .collect();
        Self { stop, tasks }
    }

    /// Stops the clients (each finishes its current request) and returns
    /// every sample.
    pub async fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(t.await.unwrap());
        }
        all
    }
}

/// One request, recorded: ok when it answered 200 with a whole body.
async fn request(
    client: &reqwest::Client,
    url: &str,
    version_header: &str,
    clock: Clock,
) -> Sample {
    let start_ms = clock.now_ms();
    let (ok, version) = match client.get(url).send().await {
        Ok(r) => {
            let status = r.status();
            let version = r
                .headers()
                .get(version_header)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = r.text().await;
            (status == 200 && body.is_ok(), version)
        }
        Err(_) => (false, String::new()),
    };
    Sample {
        start_ms,
        end_ms: clock.now_ms(),
        measured_ms: None,
        version,
        ok,
        kind: Kind::Http,
    }
}
