"""The proxy benchmark end to end on a tiny workload: it starts guard serve, times both paths, writes its record."""

from __future__ import annotations

import json

from benchmarks import proxy


def test_the_proxy_benchmark_records_both_paths_and_the_guards_own_processing_time(tmp_path, capsys):
    out = tmp_path / "proxy.json"
    assert proxy.main(["--requests", "2", "--rounds", "1", "--max-tokens", "4", "--eager", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    summary = record["summary"]
    for mode, keys in (("non_streamed", ("total_ms",)), ("streamed", ("ttfc_ms", "total_ms"))):
        for key in keys:
            for path in proxy.PATHS:
                assert summary[mode][key][path]["n"] == 2 and summary[mode][key][path]["p50"] > 0
        processing = summary[mode]["guard_processing"]
        assert processing["requests"] == 2 and processing["mean_ms"] >= 0 and processing["scores_missing"] == 0
        assert summary[mode]["guard_process_cpu"] is not None
    assert summary["streamed"]["guard_processing"]["per_chunk_ms"] >= 0
    assert summary["streamed"]["added_per_chunk_ms"]["pairs_with_different_chunk_counts"] == 0
    assert summary["goals"]["judged_on"] == "guard_processing"
    assert record["direct_requests_carry"]["return_token_ids"] is True
    assert {p["mode"] for p in record["raw"]} == set(proxy.MODES)
    assert "Proxy overhead" in capsys.readouterr().out
