//! A gauge read from elsewhere (the API's clock, say) at scrape time.

use prometheus::Registry;

/// A gauge whose value is read at scrape time from elsewhere (the API's
/// clock, say), and left out of the scrape while there is none.
pub struct GaugeFn {
    gauge: prometheus::Gauge,
    value: Box<dyn Fn() -> Option<f64> + Send + Sync>,
}

impl std::fmt::Debug for GaugeFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GaugeFn").finish_non_exhaustive()
    }
}

impl GaugeFn {
    /// Registers the gauge `name` in `registry`, valued by `value`.
    pub fn register(
        registry: &Registry,
        name: &str,
        help: &str,
        value: impl Fn() -> Option<f64> + Send + Sync + 'static,
    ) -> prometheus::Result<()> {
        let gauge = prometheus::Gauge::new(name, help)?;
        registry.register(Box::new(GaugeFn {
            gauge,
            value: Box::new(value),
        }))
    }
}

impl prometheus::core::Collector for GaugeFn {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        match (self.value)() {
            Some(v) => {
                self.gauge.set(v);
                self.gauge.collect()
            }
            None => Vec::new(),
        }
    }
}
