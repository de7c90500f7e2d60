//! The small runtime every switchyard binary shares: Kafka client configuration and topic
//! administration, layered config loading, telemetry and graceful shutdown.

pub mod config;
pub mod kafka;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;
pub mod topics;
pub mod trace;

pub use config::{load_config, ConfigError};
pub use kafka::KafkaSettings;
pub use shutdown::Shutdown;
