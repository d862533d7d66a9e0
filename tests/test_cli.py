import json
import subprocess
import sys

from conftest import tone, write

from speechrnn.cli import main


def test_import_stats_and_errors(tmp_path, capsys):
    corpus = tmp_path / "c"
    lines = ["audio\ttext\tspeaker\tsplit"]
    for i in range(4):
        write(corpus / f"{i}.wav", tone(1.0))
        lines.append(f"{i}.wav\thello number {i}\ts{i}\t{'test' if i == 3 else 'train'}")
    (corpus / "t.tsv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert main(["data", "import", "generic", "--source", str(corpus), "--out", str(out),
                 "--quiet", "--format", "tsv"]) == 0
    printed = capsys.readouterr().out
    assert "train.tsv: 3 utterances" in printed and "rejected: 0" in printed
    assert main(["data", "stats", str(out / "train.tsv"), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats[str(out / "train.tsv")]["utterances"] == 3
    assert main(["data", "import", "kaldi", "--source", str(tmp_path / "x"), "--out",
                 str(out)]) == 2
    assert "x: corpus source not found" in capsys.readouterr().err


def test_console_script_runs_as_module(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "speechrnn", "data", "stats",
                           str(tmp_path / "none.jsonl")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "manifest not found" in proc.stderr and "Traceback" not in proc.stderr


def test_synth_command(needs_espeak, tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "s"), "--train", "6", "--dev", "2",
                 "--test", "2", "--quiet"]) == 0
    assert "train.jsonl: 6 utterances" in capsys.readouterr().out
