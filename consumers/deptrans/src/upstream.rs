//! Clients of driver-profiles, personal, driver-categories and driver-trackstory.
//! Contracts: `schemas/deptrans/upstream.openapi.json`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::UpstreamConfig;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{service} unreachable")]
    Http {
        service: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("{service} answered {status}")]
    Status { service: &'static str, status: u16 },
}

/// A driver licence number: personal data, kept in memory only and never printed.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Licence(String);

impl Licence {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Licence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Licence(<redacted>)")
    }
}

/// A driver as the platform names it.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
pub struct DriverRef {
    pub park_id: String,
    pub driver_profile_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileItem {
    pub park_id: String,
    pub driver_profile_id: String,
    /// Absent when the profile has no licence (or was removed).
    #[serde(default)]
    pub driver_license_pd_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfilesPage {
    pub profiles: Vec<ProfileItem>,
    /// Pass back to get the changes after this page.
    pub cursor: String,
    /// More changes are waiting right now.
    pub has_more: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CategoryItem {
    pub park_id: String,
    pub driver_profile_id: String,
    pub categories: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CategoriesPage {
    pub drivers: Vec<CategoryItem>,
    pub cursor: String,
    pub has_more: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Position {
    pub park_id: String,
    pub driver_profile_id: String,
    pub lat: f64,
    pub lon: f64,
    pub timestamp: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PositionsRequest {
    pub drivers: Vec<DriverRef>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PositionsResponse {
    /// Drivers without a known position are absent.
    pub positions: Vec<Position>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LicencesRequest {
    pub ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LicenceItem {
    pub id: String,
    pub license: Licence,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LicencesResponse {
    /// Unknown ids are absent.
    pub items: Vec<LicenceItem>,
}

/// One HTTP client for all four services.
#[derive(Clone)]
pub struct Upstream {
    http: reqwest::Client,
    cfg: UpstreamConfig,
}

const PROFILES: &str = "driver-profiles";
const CATEGORIES: &str = "driver-categories";
const PERSONAL: &str = "personal";
const TRACKSTORY: &str = "driver-trackstory";

impl Upstream {
    pub fn new(cfg: &UpstreamConfig) -> Result<Self, UpstreamError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .build()
            .map_err(|source| UpstreamError::Http {
                service: "client",
                source,
            })?;
        Ok(Self {
            http,
            cfg: cfg.clone(),
        })
    }

    async fn send<T: serde::de::DeserializeOwned>(
        service: &'static str,
        mut req: reqwest::RequestBuilder,
    ) -> Result<T, UpstreamError> {
        // Inside a traced operation (a KRT send) the lookup joins its trace.
        let current = switchyard_runtime::trace::headers(&tracing::Span::current());
        for (name, value) in current.iter().flat_map(|h| h.pairs()) {
            req = req.header(name, value);
        }
        let resp = req
            .send()
            .await
            .map_err(|source| UpstreamError::Http { service, source })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(UpstreamError::Status {
                service,
                status: status.as_u16(),
            });
        }
        resp.json()
            .await
            .map_err(|source| UpstreamError::Http { service, source })
    }

    /// `GET /v1/profiles/updates`: profile changes after `cursor` (from the start when absent).
    pub async fn profiles_page(&self, cursor: Option<&str>) -> Result<ProfilesPage, UpstreamError> {
        let url = format!("{}/v1/profiles/updates", self.cfg.profiles_url);
        self.updates_page(PROFILES, url, cursor).await
    }

    /// `GET /v1/categories/updates`: category changes after `cursor`.
    pub async fn categories_page(
        &self,
        cursor: Option<&str>,
    ) -> Result<CategoriesPage, UpstreamError> {
        let url = format!("{}/v1/categories/updates", self.cfg.categories_url);
        self.updates_page(CATEGORIES, url, cursor).await
    }

    /// One page of an updates feed at `url`: the changes after `cursor`, at most the configured
    /// page size.
    async fn updates_page<T: serde::de::DeserializeOwned>(
        &self,
        service: &'static str,
        url: String,
        cursor: Option<&str>,
    ) -> Result<T, UpstreamError> {
        let mut req = self
            .http
            .get(url)
            .query(&[("limit", self.cfg.cache_page_size)]);
        if let Some(c) = cursor {
            req = req.query(&[("cursor", c)]);
        }
        Self::send(service, req).await
    }

    /// `POST /v1/driver_licenses/bulk_retrieve`: licence numbers by pd id.
    pub async fn licences(&self, ids: Vec<String>) -> Result<Vec<LicenceItem>, UpstreamError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let url = format!("{}/v1/driver_licenses/bulk_retrieve", self.cfg.personal_url);
        let resp: LicencesResponse =
            Self::send(PERSONAL, self.http.post(url).json(&LicencesRequest { ids })).await?;
        Ok(resp.items)
    }

    /// `POST /v1/positions`: last known positions of `drivers`.
    pub async fn positions(&self, drivers: Vec<DriverRef>) -> Result<Vec<Position>, UpstreamError> {
        if drivers.is_empty() {
            return Ok(Vec::new());
        }
        let url = format!("{}/v1/positions", self.cfg.trackstory_url);
        let resp: PositionsResponse = Self::send(
            TRACKSTORY,
            self.http.post(url).json(&PositionsRequest { drivers }),
        )
        .await?;
        Ok(resp.positions)
    }
}
