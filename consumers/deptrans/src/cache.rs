//! In-memory caches over driver-profiles and driver-categories, filled at start-up and kept
//! current from their updates feeds; while a feed is down the last data keeps being served.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::metrics::{
    CacheLabels, CacheLookups, DeptransMetrics, CACHE_CATEGORIES, CACHE_PROFILES,
};
use super::upstream::{
    CategoriesPage, CategoryItem, DriverRef, ProfileItem, ProfilesPage, Upstream, UpstreamError,
};

type Key = (String, String);

/// A page of an upstream updates feed.
trait FeedPage {
    type Row;
    /// The page's rows, the cursor after them, and whether more changes wait.
    fn into_parts(self) -> (Vec<Self::Row>, String, bool);
}

impl FeedPage for ProfilesPage {
    type Row = ProfileItem;
    fn into_parts(self) -> (Vec<ProfileItem>, String, bool) {
        (self.profiles, self.cursor, self.has_more)
    }
}

impl FeedPage for CategoriesPage {
    type Row = CategoryItem;
    fn into_parts(self) -> (Vec<CategoryItem>, String, bool) {
        (self.drivers, self.cursor, self.has_more)
    }
}

/// Where a cache stands in its updates feed (from the start when `None`).
#[derive(Default)]
struct FeedCursor(Mutex<Option<String>>);

impl FeedCursor {
    /// Reads the feed from the stored cursor until it has nothing more, handing each page's rows
    /// to `apply` and then moving the cursor past them; returns rows applied.
    async fn follow<P, Fut>(
        &self,
        fetch: impl Fn(Option<String>) -> Fut,
        mut apply: impl FnMut(Vec<P::Row>),
    ) -> Result<usize, UpstreamError>
    where
        P: FeedPage,
        Fut: Future<Output = Result<P, UpstreamError>>,
    {
        let mut applied = 0;
        loop {
            let cursor = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let (rows, next, has_more) = fetch(cursor).await?.into_parts();
            applied += rows.len();
            apply(rows);
            *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(next);
            if !has_more {
                return Ok(applied);
            }
        }
    }
}

#[derive(Default)]
struct ProfilesIndex {
    by_driver: HashMap<Key, String>,
    by_licence: HashMap<String, Vec<DriverRef>>,
}

/// (park_id, driver_profile_id) <-> driver_license_pd_id.
#[derive(Default)]
pub struct ProfilesCache {
    index: RwLock<ProfilesIndex>,
    cursor: FeedCursor,
    /// Hits and misses of the lookups below, for the hit ratio.
    lookups: CacheLookups,
}

impl ProfilesCache {
    pub fn licence_pd_id(&self, park_id: &str, driver_id: &str) -> Option<String> {
        let idx = self.index.read().unwrap_or_else(|e| e.into_inner());
        let pd = idx
            .by_driver
            .get(&(park_id.to_owned(), driver_id.to_owned()))
            .cloned();
        self.lookups.record(pd.is_some());
        pd
    }

    pub fn drivers_of(&self, pd_id: &str) -> Vec<DriverRef> {
        let idx = self.index.read().unwrap_or_else(|e| e.into_inner());
        let drivers = idx.by_licence.get(pd_id).cloned();
        self.lookups.record(drivers.is_some());
        drivers.unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_driver
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads the feed from the stored cursor until it has nothing more; returns rows applied.
    pub async fn refresh(&self, upstream: &Upstream) -> Result<usize, UpstreamError> {
        let fetch = |c: Option<String>| async move { upstream.profiles_page(c.as_deref()).await };
        self.cursor
            .follow(fetch, |profiles| {
                let mut idx = self.index.write().unwrap_or_else(|e| e.into_inner());
                for p in profiles {
                    let key = (p.park_id.clone(), p.driver_profile_id.clone());
                    let driver = DriverRef {
                        park_id: p.park_id,
                        driver_profile_id: p.driver_profile_id,
                    };
                    if let Some(old) = idx.by_driver.remove(&key) {
                        if let Some(list) = idx.by_licence.get_mut(&old) {
                            list.retain(|d| *d != driver);
                            if list.is_empty() {
                                idx.by_licence.remove(&old);
                            }
                        }
                    }
                    if let Some(pd) = p.driver_license_pd_id {
                        idx.by_licence.entry(pd.clone()).or_default().push(driver);
                        idx.by_driver.insert(key, pd);
                    }
                }
            })
            .await
    }
}

/// (park_id, driver_profile_id) -> tariff categories.
#[derive(Default)]
pub struct CategoriesCache {
    by_driver: RwLock<HashMap<Key, HashSet<String>>>,
    cursor: FeedCursor,
    /// A hit is a driver the cache knows, whatever its categories.
    lookups: CacheLookups,
}

impl CategoriesCache {
    /// True when the driver works at least one of `wanted`.
    pub fn works_any(&self, park_id: &str, driver_id: &str, wanted: &[String]) -> bool {
        let map = self.by_driver.read().unwrap_or_else(|e| e.into_inner());
        let cats = map.get(&(park_id.to_owned(), driver_id.to_owned()));
        self.lookups.record(cats.is_some());
        cats.is_some_and(|cats| wanted.iter().any(|w| cats.contains(w)))
    }

    pub async fn refresh(&self, upstream: &Upstream) -> Result<usize, UpstreamError> {
        let fetch = |c: Option<String>| async move { upstream.categories_page(c.as_deref()).await };
        self.cursor
            .follow(fetch, |drivers| {
                let mut map = self.by_driver.write().unwrap_or_else(|e| e.into_inner());
                for d in drivers {
                    let key = (d.park_id, d.driver_profile_id);
                    if d.categories.is_empty() {
                        map.remove(&key);
                    } else {
                        map.insert(key, d.categories.into_iter().collect());
                    }
                }
            })
            .await
    }
}

/// Both caches.
#[derive(Default)]
pub struct Caches {
    pub profiles: ProfilesCache,
    pub categories: CategoriesCache,
}

impl Caches {
    /// Empty caches whose lookups count into `metrics`.
    pub fn new(metrics: &DeptransMetrics) -> Self {
        Self {
            profiles: ProfilesCache {
                lookups: metrics.cache_lookups(CACHE_PROFILES),
                ..ProfilesCache::default()
            },
            categories: CategoriesCache {
                lookups: metrics.cache_lookups(CACHE_CATEGORIES),
                ..CategoriesCache::default()
            },
        }
    }

    /// Fills both caches once; the caller refuses to start when this fails.
    pub async fn fill(&self, upstream: &Upstream) -> Result<(), (&'static str, UpstreamError)> {
        self.profiles
            .refresh(upstream)
            .await
            .map_err(|e| (CACHE_PROFILES, e))?;
        self.categories
            .refresh(upstream)
            .await
            .map_err(|e| (CACHE_CATEGORIES, e))?;
        Ok(())
    }

    /// Polls both feeds every `every` until `stop`; failures keep the stale data.
    pub async fn refresh_loop(
        self: Arc<Self>,
        upstream: Upstream,
        every: Duration,
        metrics: Arc<DeptransMetrics>,
        stop: CancellationToken,
    ) {
        let failed = |cache: &'static str, e: UpstreamError| {
            tracing::warn!(error = %e, cache, "cache refresh failed, serving stale data");
            metrics
                .cache_refresh_failures
                .get_or_create(&CacheLabels { cache })
                .inc();
        };
        switchyard_runtime::shutdown::every(every, &stop, || async {
            if let Err(e) = self.profiles.refresh(&upstream).await {
                failed(CACHE_PROFILES, e);
            }
            if let Err(e) = self.categories.refresh(&upstream).await {
                failed(CACHE_CATEGORIES, e);
            }
        })
        .await;
    }
}
