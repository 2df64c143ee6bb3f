"""``vastar bench``'s ratio table of the micro suites, from pytest-benchmark JSON."""

from vastar_fast.benchmarks.report import ratio_table


def _bench(name: str, group: str, median: float, size: int = 0) -> dict:
    return {
        "name": name,
        "group": group,
        "stats": {"median": median},
        "extra_info": {"bytes": size} if size else {},
    }


def test_ratios_against_released_and_throughput() -> None:
    rows = ratio_table(
        {
            "benchmarks": [
                _bench("test_parse[released]", "sse", 10e-3, 1_000_000),
                _bench("test_parse[pure]", "sse", 5e-3, 1_000_000),
                _bench("test_parse[compiled]", "sse", 0.5e-3, 1_000_000),
            ]
        }
    )
    assert rows[1].split() == ["sse", "compiled", "500.00", "us", "2000.0", "20.0x"]
    assert rows[2].split() == ["sse", "pure", "5.00", "ms", "200.0", "2.0x"]
    assert rows[3].split() == ["sse", "released", "10.00", "ms", "100.0", "1.0x"]


def test_own_cost_rows_subtract_the_raw_floor() -> None:
    rows = ratio_table(
        {
            "benchmarks": [
                _bench("test_cost[raw]", "cost", 1e-6),
                _bench("test_cost[vastar_fast]", "cost", 4e-6),
                _bench("test_cost[released]", "cost", 31e-6),
            ]
        }
    )
    own = [r.split() for r in rows if "own cost" in r]
    assert own == [
        ["cost", "own", "cost", "released", "30.00", "us", "1.000x"],
        ["cost", "own", "cost", "vastar_fast", "3.00", "us", "0.100x"],
    ]


def test_no_own_cost_when_a_client_beats_the_raw_floor() -> None:
    rows = ratio_table(
        {
            "benchmarks": [
                _bench("test_rt[raw]", "rt", 50e-6),
                _bench("test_rt[vastar_fast]", "rt", 42e-6),
                _bench("test_rt[released]", "rt", 100e-6),
            ]
        }
    )
    own = [r for r in rows if "own cost" in r]
    assert len(own) == 1 and "n/a" in own[0]
