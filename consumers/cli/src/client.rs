//! A typed client of the admin API, used by the `switchyard` CLI (and the tests): every call
//! sends the bearer token, parses the answer into the same types the handlers return
//! (`switchyard_dispatcher::admin_api::model`) and turns `{"code","message"}` into errors.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use switchyard_dispatcher::admin_api::model::{
    AttemptList, AttemptView, DeadLetter, DeadLetterList, ErrorBody, JobStatus, PauseState,
    ReplayAccepted, SubscriberList, SubscriberView,
};
use switchyard_dispatcher::replay::ReplaySource;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("admin API unreachable at {url}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("admin API answered {status}: {message}")]
    Api { status: u16, message: String },
}

pub struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl AdminClient {
    /// `base` is the dispatcher's address, e.g. `http://127.0.0.1:8081`.
    pub fn new(base: &str, token: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap_or_default(),
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, ClientError> {
        let url = format!("{}/admin/api{path}", self.base);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let http = |source| ClientError::Http {
            url: url.clone(),
            source,
        };
        let resp = req.send().await.map_err(http)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(http)?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&bytes).map_or_else(
                |_| String::from_utf8_lossy(&bytes).into_owned(),
                |e| e.message,
            );
            return Err(ClientError::Api {
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Api {
            status: status.as_u16(),
            message: format!("unexpected answer: {e}"),
        })
    }

    pub async fn subscribers(&self) -> Result<Vec<SubscriberView>, ClientError> {
        let list: SubscriberList = self
            .call(reqwest::Method::GET, "/subscribers", None)
            .await?;
        Ok(list.subscribers)
    }

    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<PauseState, ClientError> {
        let action = if paused { "pause" } else { "resume" };
        self.call(
            reqwest::Method::POST,
            &format!("/subscribers/{}/{action}", enc(name)),
            None,
        )
        .await
    }

    pub async fn dead_letters(
        &self,
        name: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, ClientError> {
        let list: DeadLetterList = self
            .call(
                reqwest::Method::GET,
                &format!("/subscribers/{}/dead-letters?limit={limit}", enc(name)),
                None,
            )
            .await?;
        Ok(list.records)
    }

    pub async fn attempts(
        &self,
        subscriber: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AttemptView>, ClientError> {
        let mut path = format!("/attempts?limit={limit}");
        if let Some(s) = subscriber {
            path.push_str(&format!("&subscriber={}", enc(s)));
        }
        let list: AttemptList = self.call(reqwest::Method::GET, &path, None).await?;
        Ok(list.attempts)
    }

    /// Starts a replay and follows it to the end, calling `progress(done, total)` as it goes.
    pub async fn replay(
        &self,
        name: &str,
        source: &ReplaySource,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<JobStatus, ClientError> {
        let started: ReplayAccepted = self
            .call(
                reqwest::Method::POST,
                &format!("/subscribers/{}/replay", enc(name)),
                Some(serde_json::to_value(source).unwrap_or(Value::Null)),
            )
            .await?;
        let id = started.job_id;
        loop {
            let job: JobStatus = self
                .call(reqwest::Method::GET, &format!("/jobs/{id}"), None)
                .await?;
            progress(job.done, job.total);
            if job.state != "running" {
                return Ok(job);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
