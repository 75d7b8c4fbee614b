"""The line's latency statistics: a bounded window, or every sample for a run's report."""

from __future__ import annotations

from scallop.app.stats import Stats


def test_latency_keeps_recent_samples_unless_asked_to_keep_all():
    st = Stats()
    st.timing("capture", 1.0)
    for _ in range(2500):
        st.timing("inference", 2.0)
    assert len(st.latency_values()["inference"]) == 2000  # a live line only needs recent ones
    assert st.latency_summary()["inference"]["n"] == 2500
    assert set(st.latency_values()) == {"capture", "inference"}  # stages without samples left out

    st.keep_all()
    for _ in range(2500):
        st.timing("capture", 3.0)
    v = st.latency_values()
    assert len(v["capture"]) == 2501 and v["capture"][0] == 1.0  # samples kept so far stay
    assert len(v["inference"]) == 2000
