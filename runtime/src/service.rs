//! The start-up every service binary shares: its flags (`--config`, `--print-openapi`),
//! tracing, the config file and the listening socket, then the service's `run`.

use tokio::net::TcpListener;

/// The address a service was told to listen on could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("binding {listen}")]
pub struct BindError {
    listen: String,
    #[source]
    source: std::io::Error,
}

/// Binds `listen`; the error names the address, as an operator with a port clash needs it.
pub async fn bind(listen: &str) -> Result<TcpListener, BindError> {
    TcpListener::bind(listen).await.map_err(|source| BindError {
        listen: listen.to_owned(),
        source,
    })
}

/// Declares a service binary's `Args` and `main`: `--config <file>` (env
/// `SWITCHYARD_<ENV>_CONFIG`; env vars `SWITCHYARD_<ENV>_*` override the file) and
/// `--print-openapi` (prints the document, exits before tracing starts). Otherwise `main`
/// starts tracing as `service`, loads the config with `load`, binds its `listen`, evaluates
/// `run` with the config, the config file and the listener bound to the three names given,
/// then stops tracing and returns what `run` returned.
///
/// A macro, not a function, because clap's derive has to expand in the binary (which depends
/// on clap, tokio and anyhow; this crate does not).
#[macro_export]
macro_rules! service_main {
    (
        service: $service:literal,
        about: $about:literal,
        env: $env:literal,
        openapi: $openapi_help:literal => $openapi:expr,
        load: $load:expr,
        run: |$config:ident, $config_file:ident, $listener:ident| $run:expr $(,)?
    ) => {
        #[derive(::clap::Parser)]
        #[command(about = $about)]
        struct Args {
            #[arg(
                long,
                env = concat!("SWITCHYARD_", $env, "_CONFIG"),
                help = concat!("TOML config file (env vars SWITCHYARD_", $env, "_* override it)")
            )]
            config: Option<::std::path::PathBuf>,
            #[arg(long, help = concat!("Print ", $openapi_help, " and exit"))]
            print_openapi: bool,
        }

        #[::tokio::main]
        async fn main() -> ::anyhow::Result<()> {
            let args = <Args as ::clap::Parser>::parse();
            if args.print_openapi {
                print!("{}", $openapi());
                return Ok(());
            }
            $crate::telemetry::init_tracing($service);
            let $config = $load(args.config.as_deref())?;
            let $listener = $crate::service::bind(&$config.listen).await?;
            let $config_file = args.config;
            let served = $run;
            $crate::telemetry::shutdown_tracing();
            served.map_err(::anyhow::Error::from)
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_address_is_named_in_the_error() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let err = bind(&addr).await.unwrap_err();
        assert_eq!(err.to_string(), format!("binding {addr}"));
        assert_eq!(
            std::error::Error::source(&err)
                .and_then(|e| e.downcast_ref::<std::io::Error>())
                .map(std::io::Error::kind),
            Some(std::io::ErrorKind::AddrInUse)
        );
    }
}
