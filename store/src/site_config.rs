//! Deployment-wide settings kept in `site_configs` (DERP map, banners): their keys and the store's reads.
//! The operator writes them through [`crate::Admin`].

use crate::backend::LookupSql;
use crate::{Store, StoreError};

/// `site_configs` key of the announcement banners (JSON array of `{enabled, message,
/// background_color}`).
pub const SITE_CONFIG_ANNOUNCEMENT_BANNERS: &str = "announcement_banners";
/// `site_configs` key of the legacy service banner (JSON object).
pub const SITE_CONFIG_SERVICE_BANNER: &str = "service_banner";
/// `site_configs` key of the DERP map (JSON, tailnet `DERPMap`).
pub const SITE_CONFIG_DERP_MAP: &str = "derp_map";

impl Store {
    /// Read a `site_configs` value (banners, DERP map): deployment-wide, not per agent.
    pub async fn site_config(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.core().db.site_config(key).await
    }

    /// The DERP map JSON, if configured.
    pub async fn derp_map(&self) -> Result<Option<String>, StoreError> {
        self.site_config(SITE_CONFIG_DERP_MAP).await
    }

    /// The announcement banners JSON array, if configured.
    pub async fn announcement_banners(&self) -> Result<Option<String>, StoreError> {
        self.site_config(SITE_CONFIG_ANNOUNCEMENT_BANNERS).await
    }

    /// The service banner JSON object, if configured.
    pub async fn service_banner(&self) -> Result<Option<String>, StoreError> {
        self.site_config(SITE_CONFIG_SERVICE_BANNER).await
    }
}
