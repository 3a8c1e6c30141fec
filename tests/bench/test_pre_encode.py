"""bench.pre_encode runs end to end with the tiny model and writes its JSON; no timing asserted."""

import json

from bench import pre_encode


def test_pre_encode_benchmark_runs(tmp_path, capsys):
    output = tmp_path / "pre_encode.json"
    assert pre_encode.main(["--model", "tiny", "--repeats", "1", "--output", str(output)]) == 0
    report = json.loads(output.read_text())
    assert report["encode_s"] > 0 and set(report["scenarios"]) == set(pre_encode.SCENARIOS)
    assert all(row["answer_s"] >= row["first_mask_s"] >= row["waited_s"] >= 0 for row in report["scenarios"].values())
    assert "during_other" in capsys.readouterr().out
