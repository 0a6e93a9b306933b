use super::*;

#[test]
fn quantiles_hold_three_significant_digits() {
    let samples: Latencies = (1..=100).map(Duration::from_millis).collect();
    let near = |q: f64, ms: f64| {
        let got = samples.quantile(q).unwrap().as_secs_f64() * 1000.0;
        assert!((got - ms).abs() <= ms * 0.001, "q {q}: {got} ms, not {ms}");
    };
    near(0.5, 50.0);
    near(0.99, 99.0);
    near(0.999, 100.0);
    assert_eq!(samples.len(), 100);
    assert_eq!(Latencies::default().quantile(0.5), None);
    assert_eq!(
        Latencies::default().summary()["p50"],
        serde_json::Value::Null
    );
    let tiny: Latencies = [Duration::from_nanos(68_123)].into_iter().collect();
    assert_eq!(tiny.summary()["p50"], serde_json::json!(0.07));
}
