//! A self-metric read from elsewhere (the API's clock, its health) at
//! scrape time, rather than kept in step by whoever changes it.

use std::collections::HashMap;

use prometheus::core::Desc;
use prometheus::proto::{Counter, Gauge, Metric, MetricFamily, MetricType};
use prometheus::Registry;

/// A gauge or counter whose value is read at scrape time, and left out of
/// the scrape while there is none.
pub struct GaugeFn {
    desc: Desc,
    kind: MetricType,
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
    ) {
        Self::register_as(registry, MetricType::GAUGE, name, help, value)
    }

    /// Registers the counter `name` in `registry`, valued by `value`, which
    /// must never go down.
    pub fn register_counter(
        registry: &Registry,
        name: &str,
        help: &str,
        value: impl Fn() -> Option<f64> + Send + Sync + 'static,
    ) {
        Self::register_as(registry, MetricType::COUNTER, name, help, value)
    }

    fn register_as(
        registry: &Registry,
        kind: MetricType,
        name: &str,
        help: &str,
        value: impl Fn() -> Option<f64> + Send + Sync + 'static,
    ) {
        match Desc::new(name.into(), help.into(), Vec::new(), HashMap::new()) {
            Ok(desc) => super::register(
                registry,
                GaugeFn {
                    desc,
                    kind,
                    value: Box::new(value),
                },
            ),
            Err(e) => super::unregistered(name, &e),
        }
    }
}

impl prometheus::core::Collector for GaugeFn {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(v) = (self.value)() else {
            return Vec::new();
        };
        let mut metric = Metric::default();
        if self.kind == MetricType::COUNTER {
            let mut c = Counter::default();
            c.set_value(v);
            metric.set_counter(c);
        } else {
            let mut g = Gauge::default();
            g.set_value(v);
            metric.set_gauge(g);
        }
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(self.kind);
        family.mut_metric().push(metric);
        vec![family]
    }
}
