"""bench/event_packets.py lists a recorded drive's event packets next to the camera's frame-to-frame change."""

from bench_scripts import load_bench_script

from robustseg_ros.bagtools import record_synthetic

event_packets = load_bench_script("event_packets")


def test_a_starved_window_shows_in_the_counts_and_bad_topics_are_one_line_errors(tmp_path, capsys):
    bag = tmp_path / "drive"
    assert record_synthetic.cli([str(bag), "--seed", "2", "--duration", "2.0", "--width", "64", "--height", "48",
                                 "--start-time", "100.0", "--faults", "none",
                                 "--fault", "starvation:events:1.0:1.5"]) == 0
    capsys.readouterr()
    rows = event_packets.packets(bag, "/camera/image", "/events/packets", 0.15)
    assert len(rows) >= 18 and rows[0][2] is None, "one row per packet; no change before two camera images"
    starved = [count for time_s, count, _ in rows if 101.05 <= time_s < 101.5]
    nominal = [count for time_s, count, _ in rows if time_s < 100.95 or time_s >= 101.6]
    assert starved and max(starved) * 10 < min(nominal), "2 % of the events left"
    assert all(0.0 <= change <= 1.0 for _, _, change in rows[2:])

    assert event_packets.main([str(bag), "--summary", "--exclude", "101.0:101.6"]) == 0
    assert "packets; spread (p95 / p5) of the event count" in capsys.readouterr().out
    assert event_packets.main([str(bag), "--event-topic", "/events/missing"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("event_packets: bag") and "/events/missing" in error and "\n" not in error
